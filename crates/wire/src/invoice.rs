//! BOLT-11 invoices (LDK's `lightning-invoice`): the LSP issues them, signed with its node key,
//! for payment hashes its clients chose; a client pays them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bitcoin::hashes::{sha256, Hash};
use bitcoin::secp256k1::ecdsa::RecoverableSignature;
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::Network;
use lightning_invoice::{Bolt11Invoice, Currency, InvoiceBuilder, PaymentSecret, RawBolt11Invoice};

/// The longest validity an invoice may ask for (one week).
pub const MAX_EXPIRY_SECS: u32 = 7 * 24 * 3600;
/// The shortest (one minute).
pub const MIN_EXPIRY_SECS: u32 = 60;
/// The largest amount an invoice may ask for (the 21 million bitcoin).
pub const MAX_AMOUNT_MSAT: u64 = 21_000_000 * 100_000_000 * 1000;

/// Why an invoice cannot be issued or paid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvoiceError {
    /// The text is not a BOLT-11 invoice.
    #[error("not a BOLT-11 invoice: {0}")]
    Unparsable(String),
    /// It is for another network.
    #[error("the invoice is for {found:?}, this node is on {expected}")]
    WrongNetwork {
        /// The invoice's currency.
        found: Currency,
        /// Ours.
        expected: Network,
    },
    /// It has expired.
    #[error("the invoice has expired")]
    Expired,
    /// A parameter out of range.
    #[error("{0}")]
    OutOfRange(String),
    /// LDK refused to build it.
    #[error("cannot build the invoice: {0}")]
    Creation(String),
}

/// The node's signer refused to sign an invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the node's signer refused to sign the invoice")]
pub struct SignerRefused;

/// The BOLT-11 currency of `network`.
pub fn currency(network: Network) -> Currency {
    match network {
        Network::Bitcoin => Currency::Bitcoin,
        Network::Testnet | Network::Testnet4 => Currency::BitcoinTestnet,
        Network::Signet => Currency::Signet,
        _ => Currency::Regtest,
    }
}

/// What to put in an invoice.
#[derive(Debug, Clone)]
pub struct InvoiceTerms {
    /// The payment hash.
    pub payment_hash: [u8; 32],
    /// The amount, or `None` for any.
    pub amount_msat: Option<u64>,
    /// What for.
    pub description: String,
    /// Seconds it is valid.
    pub expiry_secs: u32,
    /// The payee's final CLTV delta.
    pub min_final_cltv_expiry_delta: u32,
}

/// An invoice for `terms`, signed by `sign` with the node key of the payee (the LSP):
/// [`crate::transport::Transport::sign_invoice`].
pub fn issue(
    network: Network,
    sign: impl FnOnce(&RawBolt11Invoice) -> Result<RecoverableSignature, SignerRefused>,
    terms: &InvoiceTerms,
) -> Result<String, InvoiceError> {
    if !(MIN_EXPIRY_SECS..=MAX_EXPIRY_SECS).contains(&terms.expiry_secs) {
        return Err(InvoiceError::OutOfRange(format!(
            "expiry {} s outside {MIN_EXPIRY_SECS}..={MAX_EXPIRY_SECS}",
            terms.expiry_secs
        )));
    }
    if let Some(a) = terms.amount_msat {
        if a == 0 || a > MAX_AMOUNT_MSAT {
            return Err(InvoiceError::OutOfRange(format!(
                "amount {a} msat outside 1..={MAX_AMOUNT_MSAT}"
            )));
        }
    }
    // The payment secret guards the last hop against probing; inside one LSP nobody forwards
    // further, so it is only carried for wallets that require one.
    let secret = PaymentSecret(
        sha256::Hash::hash(&[&b"superscalar/payment-secret"[..], &terms.payment_hash].concat())
            .to_byte_array(),
    );
    let builder = InvoiceBuilder::new(currency(network))
        .description(terms.description.clone())
        .payment_hash(sha256::Hash::from_byte_array(terms.payment_hash))
        .payment_secret(secret)
        .current_timestamp()
        .min_final_cltv_expiry_delta(u64::from(terms.min_final_cltv_expiry_delta))
        .expiry_time(Duration::from_secs(u64::from(terms.expiry_secs)));
    let builder = match terms.amount_msat {
        Some(a) => builder.amount_milli_satoshis(a),
        None => builder,
    };
    let raw = builder
        .build_raw()
        .map_err(|e| InvoiceError::Creation(e.to_string()))?;
    let signature = sign(&raw).map_err(|e| InvoiceError::Creation(e.to_string()))?;
    let signed = raw
        .sign::<_, ()>(|_| Ok(signature))
        .map_err(|()| InvoiceError::Creation("the signer refused".into()))?;
    Bolt11Invoice::from_signed(signed)
        .map(|i| i.to_string())
        .map_err(|e| InvoiceError::Creation(e.to_string()))
}

/// A signer of invoices with a plain secret key (tests and tools; daemons sign with their
/// node's `NodeSigner`).
pub fn key_signer(
    key: &SecretKey,
) -> impl FnOnce(&RawBolt11Invoice) -> Result<RecoverableSignature, SignerRefused> + '_ {
    move |raw| {
        let hash = Message::from_digest(raw.signable_hash());
        Ok(Secp256k1::signing_only().sign_ecdsa_recoverable(&hash, key))
    }
}

/// An invoice read and checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedInvoice {
    /// Its payment hash.
    pub payment_hash: [u8; 32],
    /// Its amount, if it has one.
    pub amount_msat: Option<u64>,
    /// Who signed it (the node to pay).
    pub payee: PublicKey,
    /// The payee's final CLTV delta.
    pub min_final_cltv_expiry_delta: u32,
    /// Its description, if it has one in clear.
    pub description: String,
    /// When it expires (seconds since the epoch).
    pub expires_at: u64,
}

/// Reads `text` as an invoice on `network`: a valid signature, not expired.
pub fn parse(text: &str, network: Network) -> Result<ParsedInvoice, InvoiceError> {
    let invoice: Bolt11Invoice =
        text.trim()
            .parse()
            .map_err(|e: lightning_invoice::ParseOrSemanticError| {
                InvoiceError::Unparsable(e.to_string())
            })?;
    if invoice.currency() != currency(network) {
        return Err(InvoiceError::WrongNetwork {
            found: invoice.currency(),
            expected: network,
        });
    }
    if invoice.is_expired() {
        return Err(InvoiceError::Expired);
    }
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let expires_at = invoice.expires_at().unwrap_or(now).as_secs();
    let description = match invoice.description() {
        lightning_invoice::Bolt11InvoiceDescriptionRef::Direct(d) => d.to_string(),
        lightning_invoice::Bolt11InvoiceDescriptionRef::Hash(_) => String::new(),
    };
    Ok(ParsedInvoice {
        payment_hash: invoice.payment_hash().to_byte_array(),
        amount_msat: invoice.amount_milli_satoshis(),
        payee: invoice.get_payee_pub_key(),
        min_final_cltv_expiry_delta: u32::try_from(invoice.min_final_cltv_expiry_delta())
            .map_err(|_| InvoiceError::OutOfRange("min_final_cltv_expiry_delta".into()))?,
        description,
        expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn terms() -> InvoiceTerms {
        InvoiceTerms {
            payment_hash: sha256::Hash::hash(&[7; 32]).to_byte_array(),
            amount_msat: Some(1_234_000),
            description: "coffee".into(),
            expiry_secs: 3600,
            min_final_cltv_expiry_delta: 80,
        }
    }

    #[test]
    fn an_issued_invoice_parses_back_with_its_terms_and_signer() {
        let sk = SecretKey::from_slice(&[3; 32]).unwrap();
        let text = issue(Network::Regtest, key_signer(&sk), &terms()).unwrap();
        assert!(text.starts_with("lnbcrt"), "{text}");
        let p = parse(&text, Network::Regtest).unwrap();
        assert_eq!(p.payment_hash, terms().payment_hash);
        assert_eq!(p.amount_msat, Some(1_234_000));
        assert_eq!(p.payee, sk.public_key(&Secp256k1::new()));
        assert_eq!(p.min_final_cltv_expiry_delta, 80);
        assert_eq!(p.description, "coffee");
        assert!(matches!(
            parse(&text, Network::Bitcoin),
            Err(InvoiceError::WrongNetwork { .. })
        ));
    }

    #[test]
    fn bad_terms_and_bad_text_are_refused() {
        let sk = SecretKey::from_slice(&[3; 32]).unwrap();
        for (amount, expiry) in [
            (Some(0), 3600),
            (Some(MAX_AMOUNT_MSAT + 1), 3600),
            (None, 59),
        ] {
            let t = InvoiceTerms {
                amount_msat: amount,
                expiry_secs: expiry,
                ..terms()
            };
            assert!(issue(Network::Regtest, key_signer(&sk), &t).is_err());
        }
        let text = issue(Network::Regtest, key_signer(&sk), &terms()).unwrap();
        for bad in ["", "lnbcrt", "hello", &text[..text.len() - 1]] {
            assert!(parse(bad, Network::Regtest).is_err(), "{bad:?}");
        }
        // One character changed: the checksum or the signature fails.
        let mut flipped = text.clone().into_bytes();
        let i = flipped.len() / 2;
        flipped[i] = if flipped[i] == b'q' { b'p' } else { b'q' };
        assert!(parse(std::str::from_utf8(&flipped).unwrap(), Network::Regtest).is_err());
    }
}
