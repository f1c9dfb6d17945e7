//! Leaf channels for the demo: opened on a factory's channel outputs, and payments between two
//! clients through the LSP.

use bitcoin::hashes::{sha256, Hash};
use bitcoin::key::Keypair;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{OutPoint, TxOut};
use superscalar_core::ceremony::LspCeremony;
use superscalar_core::channel::deadlines::DEFAULT_MARGIN_BLOCKS;
use superscalar_core::channel::state::{Channel, ChannelLimits, ChannelSecrets, ChannelSetup};
use superscalar_core::factory::Slot;
use superscalar_core::{ClientId, Factory, TxKind};

type DemoResult<T> = Result<T, Box<dyn std::error::Error>>;

fn secrets(seed: u8, funding: Keypair) -> DemoResult<ChannelSecrets> {
    let k = |i: u8| -> DemoResult<SecretKey> {
        let mut b = [0u8; 32];
        bitcoin::secp256k1::rand::RngCore::fill_bytes(
            &mut bitcoin::secp256k1::rand::thread_rng(),
            &mut b,
        );
        b[0] ^= seed ^ i;
        Ok(SecretKey::from_slice(&b)?)
    };
    let mut seed_bytes = [0u8; 32];
    bitcoin::secp256k1::rand::RngCore::fill_bytes(
        &mut bitcoin::secp256k1::rand::thread_rng(),
        &mut seed_bytes,
    );
    Ok(ChannelSecrets {
        payment: k(1)?,
        delayed_payment: k(2)?,
        htlc: k(3)?,
        revocation: k(4)?,
        seed: seed_bytes,
        funding,
    })
}

use superscalar_core::channel::state::run_round as round;

/// Open `client`'s leaf channel at height `tip`: (LSP side, client side); the client starts with
/// `client_msat`. Both sides take the limits the factory's timeout and exit time allow.
#[allow(clippy::too_many_arguments)]
pub fn open(
    factory: &Factory,
    funding: OutPoint,
    ceremony: &LspCeremony,
    lsp_key: Keypair,
    client_keys: &[Keypair],
    client: u32,
    client_msat: u64,
    tip: u32,
) -> DemoResult<(Channel, Channel)> {
    let c = ClientId(client);
    let txid_of = |k: TxKind| ceremony.signed(k).map(|s| s.tx.compute_txid());
    let key = factory.signing_key(Slot::Channel(c))?;
    let capacity = factory.params().clients[client as usize].capacity;
    let outpoint = factory
        .slot_outpoint(
            Slot::Channel(c),
            funding,
            &factory.initial_version(),
            txid_of,
        )
        .ok_or("channel output")?;
    let setup = |we_opened, our| ChannelSetup {
        funding_outpoint: outpoint,
        funding: TxOut {
            value: capacity,
            script_pubkey: factory
                .script_pubkey(Slot::Channel(c))
                .expect("built above"),
        },
        funding_key: key.clone(),
        we_opened,
        our_balance_msat: our,
    };
    let ls = secrets(1, lsp_key)?;
    let cs = secrets(2, client_keys[client as usize])?;
    let limits = ChannelLimits::for_factory(factory, tip, DEFAULT_MARGIN_BLOCKS)?;
    let (la, ca) = (
        Channel::announcement(&ls, &key, outpoint),
        Channel::announcement(&cs, &key, outpoint),
    );
    let mut lsp = Channel::new(
        setup(true, capacity.to_sat() * 1000 - client_msat),
        ls,
        limits,
        ca,
        limits,
    )?;
    let mut cl = Channel::new(setup(false, client_msat), cs, limits, la, limits)?;
    round(&mut lsp, &mut cl)?;
    Ok((lsp, cl))
}

/// Blocks the LSP keeps between the expiry of an HTLC it forwards and the one it receives.
pub const FORWARD_DELTA: u32 = 12;

/// `from` pays `amount` msat to the client of `to` through the LSP (four lock-step rounds); the
/// payee's HTLC expires at `final_expiry`, the payer's `FORWARD_DELTA` blocks later.
#[allow(clippy::too_many_arguments)]
pub fn pay(
    from: &mut Channel,
    lsp_from: &mut Channel,
    lsp_to: &mut Channel,
    to: &mut Channel,
    amount: u64,
    nonce: u64,
    height: u32,
    final_expiry: u32,
) -> DemoResult<()> {
    let mut preimage = [0u8; 32];
    bitcoin::secp256k1::rand::RngCore::fill_bytes(
        &mut bitcoin::secp256k1::rand::thread_rng(),
        &mut preimage,
    );
    preimage[..8].copy_from_slice(&nonce.to_be_bytes());
    let hash = sha256::Hash::hash(&preimage).to_byte_array();
    let add = from.add_htlc(amount, hash, final_expiry + FORWARD_DELTA, height)?;
    lsp_from.receive_add(&add, height)?;
    round(from, lsp_from)?;
    let fwd = lsp_to.add_htlc(amount, hash, final_expiry, height)?;
    to.receive_add(&fwd, height)?;
    round(lsp_to, to)?;
    let f = to.fulfill_htlc(fwd.id, preimage)?;
    let got = lsp_to.receive_fulfill(&f)?;
    round(to, lsp_to)?;
    let f = lsp_from.fulfill_htlc(add.id, got)?;
    from.receive_fulfill(&f)?;
    round(lsp_from, from)?;
    Ok(())
}
