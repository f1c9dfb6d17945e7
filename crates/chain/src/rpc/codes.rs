//! Bitcoin Core's JSON-RPC error codes (`src/rpc/protocol.h`), the ones this project uses.

/// Standard JSON-RPC 2.0: the request is not a valid request object.
pub const RPC_INVALID_REQUEST: i32 = -32600;
/// Standard JSON-RPC 2.0: no such method.
pub const RPC_METHOD_NOT_FOUND: i32 = -32601;
/// Standard JSON-RPC 2.0: invalid method parameters.
pub const RPC_INVALID_PARAMS: i32 = -32602;
/// Standard JSON-RPC 2.0: internal error.
pub const RPC_INTERNAL_ERROR: i32 = -32603;
/// Standard JSON-RPC 2.0: the body is not JSON.
pub const RPC_PARSE_ERROR: i32 = -32700;
/// An exception thrown in command handling.
pub const RPC_MISC_ERROR: i32 = -1;
/// An unexpected type was passed as a parameter.
pub const RPC_TYPE_ERROR: i32 = -3;
/// Invalid address or key (also: no such transaction or block).
pub const RPC_INVALID_ADDRESS_OR_KEY: i32 = -5;
/// Invalid, missing or duplicate parameter.
pub const RPC_INVALID_PARAMETER: i32 = -8;
/// Database error.
pub const RPC_DATABASE_ERROR: i32 = -20;
/// Error parsing or validating a structure in raw format.
pub const RPC_DESERIALIZATION_ERROR: i32 = -22;
/// General error during transaction or block submission.
pub const RPC_VERIFY_ERROR: i32 = -25;
/// Transaction or block rejected by network rules.
pub const RPC_VERIFY_REJECTED: i32 = -26;
/// The transaction is already in the UTXO set (Core's old name: already in chain).
pub const RPC_VERIFY_ALREADY_IN_CHAIN: i32 = -27;
/// The node is still warming up.
pub const RPC_IN_WARMUP: i32 = -28;
/// A bounded resource is at capacity.
pub const RPC_LIMIT_EXCEEDED: i32 = -37;
/// Core's name for [`RPC_VERIFY_ERROR`] on transaction submission.
pub const RPC_TRANSACTION_ERROR: i32 = RPC_VERIFY_ERROR;
/// Core's name for [`RPC_VERIFY_REJECTED`] on transaction submission.
pub const RPC_TRANSACTION_REJECTED: i32 = RPC_VERIFY_REJECTED;
/// Core's name for [`RPC_VERIFY_ALREADY_IN_CHAIN`].
pub const RPC_VERIFY_ALREADY_IN_UTXO_SET: i32 = RPC_VERIFY_ALREADY_IN_CHAIN;
