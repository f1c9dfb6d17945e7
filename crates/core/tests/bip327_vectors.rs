//! The official BIP-327 (MuSig2) test vectors, run against libsecp256k1's
//! MuSig2 module through the `secp256k1` 0.33 crate (renamed `musig` in
//! `Cargo.toml`).
//!
//! The JSON files under `tests/vectors/bip327/` are the vector files of
//! `bip-0327/vectors/` in the bitcoin/bips repository. Each `#[test]` below
//! covers one file, counts the cases it checked and the cases it skipped, and
//! asserts a minimum number of checked cases, so that it cannot pass by
//! skipping everything.
//!
//! A case is skipped only where the library's API cannot express it:
//!
//! * libsecp256k1 signs and derives nonces only for 32-byte messages
//!   (`Session::new` and `new_nonce_pair` take `&[u8; 32]`), so cases whose
//!   message is of another length are skipped.
//! * `Session::partial_sign` has no fallible variant: it asserts success, and
//!   libsecp256k1 reports a zeroed secret nonce through its illegal-argument
//!   callback, which panics inside an `extern "C"` function and so aborts the
//!   whole test process. The "secnonce is invalid" sign error is skipped.
//! * libsecp256k1 does not check that the signer's key is in the key list (the
//!   vector marks that check as optional), so that sign error is skipped.
//! * A `KeyAggCache` can only be built from individual public keys, so a
//!   NonceGen case that supplies an arbitrary aggregate key is skipped.
//! * libsecp256k1 implements no DeterministicSign, so `det_sign_vectors.json`
//!   is not used.
//!
//! Run with `--nocapture` to see which cases were skipped and why.

use musig::musig::{
    new_nonce_pair, AggregatedNonce, KeyAggCache, PartialSignature, PublicNonce, SecretNonce,
    Session, SessionSecretRand,
};
use musig::{Keypair, PublicKey, Scalar, SecretKey};
use serde_json::Value;

const KEY_SORT: &str = include_str!("vectors/bip327/key_sort_vectors.json");
const KEY_AGG: &str = include_str!("vectors/bip327/key_agg_vectors.json");
const NONCE_GEN: &str = include_str!("vectors/bip327/nonce_gen_vectors.json");
const NONCE_AGG: &str = include_str!("vectors/bip327/nonce_agg_vectors.json");
const SIGN_VERIFY: &str = include_str!("vectors/bip327/sign_verify_vectors.json");
const TWEAK: &str = include_str!("vectors/bip327/tweak_vectors.json");
const SIG_AGG: &str = include_str!("vectors/bip327/sig_agg_vectors.json");

/// Length of a secret nonce as BIP-327 serializes it: `k1 || k2 || pk`.
const BIP327_SECNONCE_LEN: usize = 97;

/// Counts what a vector file's test did, and why it skipped what it skipped.
#[derive(Default)]
struct Tally {
    checked: usize,
    skipped: Vec<String>,
}

impl Tally {
    fn check(&mut self) {
        self.checked += 1;
    }

    fn skip(&mut self, case: &str, reason: &str) {
        self.skipped.push(format!("{case}: {reason}"));
    }

    /// Prints the tally and asserts that at least `min_checked` cases were
    /// checked and at most `max_skipped` were skipped.
    fn finish(&self, file: &str, min_checked: usize, max_skipped: usize) {
        println!(
            "{file}: {} cases checked, {} skipped",
            self.checked,
            self.skipped.len()
        );
        for reason in &self.skipped {
            println!("  skipped {reason}");
        }
        assert!(
            self.checked >= min_checked,
            "{file}: only {} cases checked, expected at least {min_checked}",
            self.checked
        );
        assert!(
            self.skipped.len() <= max_skipped,
            "{file}: {} cases skipped, expected at most {max_skipped}",
            self.skipped.len()
        );
    }
}

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is valid JSON")
}

fn field<'a>(v: &'a Value, key: &str) -> &'a Value {
    v.get(key)
        .unwrap_or_else(|| panic!("vector has no field {key:?}"))
}

fn cases<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    field(v, key)
        .as_array()
        .unwrap_or_else(|| panic!("field {key:?} is not an array"))
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap_or_else(|e| panic!("bad hex {s:?} in vector: {e}"))
}

fn hex_field(v: &Value, key: &str) -> Vec<u8> {
    unhex(
        field(v, key)
            .as_str()
            .unwrap_or_else(|| panic!("field {key:?} is not a string")),
    )
}

fn hex_list(v: &Value, key: &str) -> Vec<Vec<u8>> {
    cases(v, key)
        .iter()
        .map(|s| unhex(s.as_str().expect("hex string")))
        .collect()
}

fn index_list(v: &Value, key: &str) -> Vec<usize> {
    cases(v, key)
        .iter()
        .map(|i| usize::try_from(i.as_u64().expect("index")).expect("index fits usize"))
        .collect()
}

fn bool_list(v: &Value, key: &str) -> Vec<bool> {
    cases(v, key)
        .iter()
        .map(|b| b.as_bool().expect("boolean"))
        .collect()
}

fn index(v: &Value, key: &str) -> usize {
    usize::try_from(field(v, key).as_u64().expect("index")).expect("index fits usize")
}

fn comment(v: &Value) -> &str {
    v.get("comment").and_then(Value::as_str).unwrap_or("")
}

/// The error object of an error case: its type, the signer it blames (if
/// any), what the signer contributed (if stated), and its message (if any).
struct ExpectedError<'a> {
    kind: &'a str,
    signer: Option<usize>,
    contrib: Option<&'a str>,
    message: Option<&'a str>,
}

fn expected_error(case: &Value) -> ExpectedError<'_> {
    let error = field(case, "error");
    ExpectedError {
        kind: field(error, "type").as_str().expect("error type"),
        signer: error
            .get("signer")
            .and_then(Value::as_u64)
            .map(|s| usize::try_from(s).expect("signer fits usize")),
        contrib: error.get("contrib").and_then(Value::as_str),
        message: error.get("message").and_then(Value::as_str),
    }
}

fn pick<'a, T>(items: &'a [T], indices: &[usize]) -> Vec<&'a T> {
    indices.iter().map(|&i| &items[i]).collect()
}

/// BIP-327 individual public keys are 33-byte compressed points.
fn parse_pubkey(bytes: &[u8]) -> Option<PublicKey> {
    let array: [u8; 33] = bytes.try_into().ok()?;
    PublicKey::from_byte_array_compressed(array).ok()
}

fn parse_pubnonce(bytes: &[u8]) -> Option<PublicNonce> {
    let array: [u8; 66] = bytes.try_into().ok()?;
    PublicNonce::from_byte_array(&array).ok()
}

fn parse_aggnonce(bytes: &[u8]) -> Option<AggregatedNonce> {
    let array: [u8; 66] = bytes.try_into().ok()?;
    AggregatedNonce::from_byte_array(&array).ok()
}

fn parse_psig(bytes: &[u8]) -> Option<PartialSignature> {
    let array: [u8; 32] = bytes.try_into().ok()?;
    PartialSignature::from_byte_array(&array).ok()
}

fn parse_tweak(bytes: &[u8]) -> Option<Scalar> {
    let array: [u8; 32] = bytes.try_into().ok()?;
    Scalar::from_be_bytes(array).ok()
}

/// A message libsecp256k1 can sign, or `None` if it is not 32 bytes long.
fn msg32(bytes: &[u8]) -> Option<[u8; 32]> {
    bytes.try_into().ok()
}

/// Parses every item, returning the parsed values or the position of the
/// first item that fails to parse.
fn parse_all<T>(items: &[&Vec<u8>], parse: impl Fn(&[u8]) -> Option<T>) -> Result<Vec<T>, usize> {
    items
        .iter()
        .enumerate()
        .map(|(pos, bytes)| parse(bytes).ok_or(pos))
        .collect()
}

/// The position of the only item that fails to parse, if exactly one does.
fn only_failure<T>(items: &[&Vec<u8>], parse: impl Fn(&[u8]) -> Option<T>) -> Option<usize> {
    let failures: Vec<usize> = items
        .iter()
        .enumerate()
        .filter(|(_, bytes)| parse(bytes).is_none())
        .map(|(pos, _)| pos)
        .collect();
    match failures.as_slice() {
        [pos] => Some(*pos),
        _ => None,
    }
}

fn key_agg_cache(keys: &[PublicKey]) -> KeyAggCache {
    let refs: Vec<&PublicKey> = keys.iter().collect();
    KeyAggCache::new(&refs)
}

fn aggregate_nonces(nonces: &[PublicNonce]) -> AggregatedNonce {
    let refs: Vec<&PublicNonce> = nonces.iter().collect();
    AggregatedNonce::new(&refs)
}

/// Applies the tweaks in order, each as an x-only or a plain tweak. Returns
/// the position of the first tweak that is rejected, either because it is not
/// a scalar below the group order or because libsecp256k1 refuses it.
fn apply_tweaks(
    cache: &mut KeyAggCache,
    tweaks: &[&Vec<u8>],
    is_xonly: &[bool],
) -> Result<(), usize> {
    assert_eq!(tweaks.len(), is_xonly.len(), "one is_xonly flag per tweak");
    for (pos, (tweak, &xonly)) in tweaks.iter().zip(is_xonly).enumerate() {
        let scalar = parse_tweak(tweak).ok_or(pos)?;
        let applied = if xonly {
            cache.pubkey_xonly_tweak_add(&scalar)
        } else {
            cache.pubkey_ec_tweak_add(&scalar)
        };
        applied.map_err(|_| pos)?;
    }
    Ok(())
}

/// Converts a BIP-327 secret nonce (`k1 || k2 || pk`, 97 bytes) to
/// libsecp256k1's 132-byte internal layout: a 4-byte magic, `k1`, `k2` (both
/// big-endian), then the public key as libsecp256k1 stores a group element
/// (64 bytes, x then y, in its internal field representation).
///
/// Rather than re-encode the point by hand, this asks libsecp256k1 for a
/// secret nonce bound to the same public key and replaces its two scalars, so
/// the magic and the stored key are exactly what the library writes itself.
fn secnonce_from_bip327(bip: &[u8]) -> Option<(SecretNonce, PublicKey)> {
    if bip.len() != BIP327_SECNONCE_LEN {
        return None;
    }
    let pk = parse_pubkey(&bip[64..])?;
    let (template, _) = new_nonce_pair(
        SessionSecretRand::assume_uniformly_random([0x5a; 32]),
        None,
        None,
        pk,
        None,
        None,
    );
    let mut raw = template.dangerous_into_bytes();
    raw[4..68].copy_from_slice(&bip[..64]);
    Some((SecretNonce::dangerous_from_bytes(raw), pk))
}

/// Signs as the holder of `keypair`. The public key stored in the secret nonce
/// must be the keypair's: libsecp256k1 treats a mismatch as an illegal
/// argument, which would abort the test process, so it is asserted first.
fn partial_sign(
    session: &Session,
    secnonce: SecretNonce,
    secnonce_pk: &PublicKey,
    keypair: &Keypair,
    cache: &KeyAggCache,
) -> PartialSignature {
    assert_eq!(
        &keypair.public_key(),
        secnonce_pk,
        "the vector's secret nonce belongs to the vector's secret key"
    );
    session.partial_sign(secnonce, keypair, cache)
}

fn keypair_from_hex(v: &Value, key: &str) -> Keypair {
    let sk: [u8; 32] = hex_field(v, key)
        .try_into()
        .expect("secret key is 32 bytes");
    let sk = SecretKey::from_secret_bytes(sk).expect("vector secret key is valid");
    Keypair::from_secret_key(&sk)
}

#[test]
fn bip327_key_sort_vectors() {
    let data = load(KEY_SORT);
    let mut tally = Tally::default();

    let input = hex_list(&data, "pubkeys");
    let expected = hex_list(&data, "sorted_pubkeys");
    let keys: Vec<PublicKey> = input
        .iter()
        .map(|k| parse_pubkey(k).expect("key-sort vector keys are valid"))
        .collect();

    // libsecp256k1's own KeySort.
    let mut refs: Vec<&PublicKey> = keys.iter().collect();
    musig::sort_pubkeys(&mut refs);
    let sorted: Vec<Vec<u8>> = refs.iter().map(|k| k.serialize().to_vec()).collect();
    assert_eq!(sorted, expected, "sort_pubkeys");
    tally.check();

    // KeySort as BIP-327 defines it: the 33-byte encodings in lexicographic
    // order.
    let mut by_bytes = input.clone();
    by_bytes.sort();
    assert_eq!(by_bytes, expected, "lexicographic sort of the encodings");
    tally.check();

    tally.finish("key_sort_vectors.json", 2, 0);
}

#[test]
fn bip327_key_agg_vectors() {
    let data = load(KEY_AGG);
    let mut tally = Tally::default();
    let pubkeys = hex_list(&data, "pubkeys");
    let tweaks = hex_list(&data, "tweaks");

    for (n, case) in cases(&data, "valid_test_cases").iter().enumerate() {
        let chosen = pick(&pubkeys, &index_list(case, "key_indices"));
        let keys = parse_all(&chosen, parse_pubkey)
            .unwrap_or_else(|pos| panic!("valid case {n}: key {pos} does not parse"));
        let cache = key_agg_cache(&keys);
        assert_eq!(
            cache.agg_pk().to_byte_array().to_vec(),
            hex_field(case, "expected"),
            "valid case {n}: aggregate x-only key"
        );
        tally.check();
    }

    for (n, case) in cases(&data, "error_test_cases").iter().enumerate() {
        let what = format!("error case {n} ({})", comment(case));
        let chosen = pick(&pubkeys, &index_list(case, "key_indices"));
        let error = expected_error(case);
        match (error.kind, error.contrib) {
            ("invalid_contribution", Some("pubkey")) => {
                assert_eq!(
                    only_failure(&chosen, parse_pubkey),
                    error.signer,
                    "{what}: exactly the blamed signer's key fails to parse"
                );
            }
            ("value", _) => {
                let keys = parse_all(&chosen, parse_pubkey)
                    .unwrap_or_else(|pos| panic!("{what}: key {pos} does not parse"));
                let mut cache = key_agg_cache(&keys);
                let chosen_tweaks = pick(&tweaks, &index_list(case, "tweak_indices"));
                let is_xonly = bool_list(case, "is_xonly");
                assert!(
                    apply_tweaks(&mut cache, &chosen_tweaks, &is_xonly).is_err(),
                    "{what}: a tweak must be rejected ({:?})",
                    error.message
                );
            }
            other => panic!("{what}: unexpected error kind {other:?}"),
        }
        tally.check();
    }

    tally.finish("key_agg_vectors.json", 9, 0);
}

#[test]
fn bip327_nonce_gen_vectors() {
    let data = load(NONCE_GEN);
    let mut tally = Tally::default();

    for (n, case) in cases(&data, "test_cases").iter().enumerate() {
        let what = format!("case {n}");
        let optional = |key: &str| case.get(key).and_then(Value::as_str).map(unhex);
        let msg = optional("msg");
        if msg.as_ref().is_some_and(|m| m.len() != 32) {
            tally.skip(
                &what,
                "the message is not 32 bytes; libsecp256k1's nonce_gen takes only \
                 32-byte messages",
            );
            continue;
        }
        if optional("aggpk").is_some() {
            tally.skip(
                &what,
                "an aggregate key is given directly; the API takes it only as a \
                 KeyAggCache built from individual keys",
            );
            continue;
        }

        let rand: [u8; 32] = hex_field(case, "rand_")
            .try_into()
            .expect("rand_ is 32 bytes");
        let pk = parse_pubkey(&hex_field(case, "pk")).expect("nonce-gen pk is valid");
        let sk = optional("sk").map(|sk| {
            let sk: [u8; 32] = sk.try_into().expect("sk is 32 bytes");
            SecretKey::from_secret_bytes(sk).expect("nonce-gen sk is valid")
        });
        let msg = msg.map(|m| msg32(&m).expect("checked above"));
        let extra = optional("extra_in").map(|e| {
            let e: [u8; 32] = e.try_into().expect("extra_in is 32 bytes");
            e
        });

        let (secnonce, pubnonce) = new_nonce_pair(
            SessionSecretRand::assume_uniformly_random(rand),
            None,
            sk,
            pk,
            msg.as_ref(),
            extra,
        );
        let expected_secnonce = hex_field(case, "expected_secnonce");
        let raw = secnonce.dangerous_into_bytes();
        assert_eq!(
            raw[4..68].to_vec(),
            expected_secnonce[..64].to_vec(),
            "{what}: k1 || k2 of the secret nonce"
        );
        assert_eq!(
            &expected_secnonce[64..],
            &pk.serialize()[..],
            "{what}: the vector's secret nonce ends with pk"
        );
        assert_eq!(
            pubnonce.serialize().to_vec(),
            hex_field(case, "expected_pubnonce"),
            "{what}: public nonce"
        );
        tally.check();
    }

    tally.finish("nonce_gen_vectors.json", 1, 3);
}

#[test]
fn bip327_nonce_agg_vectors() {
    let data = load(NONCE_AGG);
    let mut tally = Tally::default();
    let pnonces = hex_list(&data, "pnonces");

    for (n, case) in cases(&data, "valid_test_cases").iter().enumerate() {
        let chosen = pick(&pnonces, &index_list(case, "pnonce_indices"));
        let nonces = parse_all(&chosen, parse_pubnonce)
            .unwrap_or_else(|pos| panic!("valid case {n}: nonce {pos} does not parse"));
        let aggnonce = aggregate_nonces(&nonces);
        let expected = hex_field(case, "expected");
        assert_eq!(
            aggnonce.serialize().to_vec(),
            expected,
            "valid case {n}: aggregate nonce"
        );
        assert_eq!(
            parse_aggnonce(&expected).map(|a| a.serialize().to_vec()),
            Some(expected),
            "valid case {n}: the aggregate nonce parses back"
        );
        tally.check();
    }

    for (n, case) in cases(&data, "error_test_cases").iter().enumerate() {
        let what = format!("error case {n} ({})", comment(case));
        let chosen = pick(&pnonces, &index_list(case, "pnonce_indices"));
        let error = expected_error(case);
        assert_eq!(
            (error.kind, error.contrib),
            ("invalid_contribution", Some("pubnonce")),
            "{what}: error kind"
        );
        assert_eq!(
            only_failure(&chosen, parse_pubnonce),
            error.signer,
            "{what}: exactly the blamed signer's nonce fails to parse"
        );
        tally.check();
    }

    tally.finish("nonce_agg_vectors.json", 5, 0);
}

#[test]
fn bip327_sign_verify_vectors() {
    let data = load(SIGN_VERIFY);
    let mut tally = Tally::default();
    let keypair = keypair_from_hex(&data, "sk");
    let pubkeys = hex_list(&data, "pubkeys");
    let secnonces = hex_list(&data, "secnonces");
    let pnonces = hex_list(&data, "pnonces");
    let aggnonces = hex_list(&data, "aggnonces");
    let msgs = hex_list(&data, "msgs");

    for (n, case) in cases(&data, "valid_test_cases").iter().enumerate() {
        let what = format!("valid case {n}");
        let Some(msg) = msg32(&msgs[index(case, "msg_index")]) else {
            tally.skip(
                &what,
                "the message is not 32 bytes; libsecp256k1 signs only 32-byte messages",
            );
            continue;
        };
        let key_indices = index_list(case, "key_indices");
        let nonce_indices = index_list(case, "nonce_indices");
        let signer = index(case, "signer_index");
        let keys = parse_all(&pick(&pubkeys, &key_indices), parse_pubkey)
            .unwrap_or_else(|pos| panic!("{what}: key {pos} does not parse"));
        let nonces = parse_all(&pick(&pnonces, &nonce_indices), parse_pubnonce)
            .unwrap_or_else(|pos| panic!("{what}: nonce {pos} does not parse"));
        let aggnonce_bytes = &aggnonces[index(case, "aggnonce_index")];
        let aggnonce =
            parse_aggnonce(aggnonce_bytes).unwrap_or_else(|| panic!("{what}: aggnonce parses"));
        assert_eq!(
            &aggregate_nonces(&nonces).serialize()[..],
            &aggnonce_bytes[..],
            "{what}: the aggregate of the public nonces"
        );

        let cache = key_agg_cache(&keys);
        let session = Session::new(&cache, aggnonce, &msg);
        // The valid cases all sign with the first secret nonce.
        let (secnonce, secnonce_pk) =
            secnonce_from_bip327(&secnonces[0]).expect("secnonce 0 converts");
        let psig = partial_sign(&session, secnonce, &secnonce_pk, &keypair, &cache);
        assert_eq!(
            psig.serialize().to_vec(),
            hex_field(case, "expected"),
            "{what}: partial signature"
        );
        assert!(
            session.partial_verify(&cache, &psig, &nonces[signer], keys[signer]),
            "{what}: partial_verify accepts the partial signature"
        );
        tally.check();
    }

    for (n, case) in cases(&data, "sign_error_test_cases").iter().enumerate() {
        let what = format!("sign error case {n} ({})", comment(case));
        let chosen = pick(&pubkeys, &index_list(case, "key_indices"));
        let error = expected_error(case);
        match (error.kind, error.contrib) {
            ("invalid_contribution", Some("pubkey")) => {
                assert_eq!(
                    only_failure(&chosen, parse_pubkey),
                    error.signer,
                    "{what}: exactly the blamed signer's key fails to parse"
                );
                tally.check();
            }
            ("invalid_contribution", Some("aggnonce")) => {
                let aggnonce = &aggnonces[index(case, "aggnonce_index")];
                assert!(
                    parse_aggnonce(aggnonce).is_none(),
                    "{what}: the aggregate nonce is rejected"
                );
                tally.check();
            }
            ("value", _)
                if error
                    .message
                    .is_some_and(|m| m.contains("pubkey must be included")) =>
            {
                tally.skip(
                    &what,
                    "libsecp256k1 does not check that the signer's key is in the key \
                     list (BIP-327 marks this check optional); partial_sign would sign",
                );
            }
            ("value", _) if error.message.is_some_and(|m| m.contains("secnonce")) => {
                tally.skip(
                    &what,
                    "a zeroed secnonce is an illegal argument to libsecp256k1's \
                     partial_sign, whose callback aborts the process; \
                     Session::partial_sign has no fallible variant",
                );
            }
            other => panic!("{what}: unexpected error kind {other:?}"),
        }
    }

    for (n, case) in cases(&data, "verify_fail_test_cases").iter().enumerate() {
        let what = format!("verify fail case {n} ({})", comment(case));
        let msg = msg32(&msgs[index(case, "msg_index")]).expect("32-byte message");
        let signer = index(case, "signer_index");
        let keys = parse_all(
            &pick(&pubkeys, &index_list(case, "key_indices")),
            parse_pubkey,
        )
        .unwrap_or_else(|pos| panic!("{what}: key {pos} does not parse"));
        let nonces = parse_all(
            &pick(&pnonces, &index_list(case, "nonce_indices")),
            parse_pubnonce,
        )
        .unwrap_or_else(|pos| panic!("{what}: nonce {pos} does not parse"));
        let cache = key_agg_cache(&keys);
        let session = Session::new(&cache, aggregate_nonces(&nonces), &msg);
        // A partial signature that is not below the group order cannot even
        // be parsed; any other wrong one must fail verification.
        if let Some(psig) = parse_psig(&hex_field(case, "sig")) {
            assert!(
                !session.partial_verify(&cache, &psig, &nonces[signer], keys[signer]),
                "{what}: partial_verify rejects the partial signature"
            );
        }
        tally.check();
    }

    for (n, case) in cases(&data, "verify_error_test_cases").iter().enumerate() {
        let what = format!("verify error case {n} ({})", comment(case));
        let error = expected_error(case);
        let failure = match (error.kind, error.contrib) {
            ("invalid_contribution", Some("pubnonce")) => only_failure(
                &pick(&pnonces, &index_list(case, "nonce_indices")),
                parse_pubnonce,
            ),
            ("invalid_contribution", Some("pubkey")) => only_failure(
                &pick(&pubkeys, &index_list(case, "key_indices")),
                parse_pubkey,
            ),
            other => panic!("{what}: unexpected error kind {other:?}"),
        };
        assert_eq!(
            failure, error.signer,
            "{what}: exactly the blamed signer's contribution fails to parse"
        );
        tally.check();
    }

    // 4 valid, 4 sign errors, 3 verify failures, 2 verify errors.
    tally.finish("sign_verify_vectors.json", 13, 4);
}

#[test]
fn bip327_tweak_vectors() {
    let data = load(TWEAK);
    let mut tally = Tally::default();
    let keypair = keypair_from_hex(&data, "sk");
    let pubkeys = hex_list(&data, "pubkeys");
    let pnonces = hex_list(&data, "pnonces");
    let tweaks = hex_list(&data, "tweaks");
    let aggnonce_bytes = hex_field(&data, "aggnonce");
    let secnonce_bytes = hex_field(&data, "secnonce");
    let msg = msg32(&hex_field(&data, "msg")).expect("tweak vector message is 32 bytes");

    for (n, case) in cases(&data, "valid_test_cases").iter().enumerate() {
        let what = format!("valid case {n} ({})", comment(case));
        let signer = index(case, "signer_index");
        let keys = parse_all(
            &pick(&pubkeys, &index_list(case, "key_indices")),
            parse_pubkey,
        )
        .unwrap_or_else(|pos| panic!("{what}: key {pos} does not parse"));
        let nonces = parse_all(
            &pick(&pnonces, &index_list(case, "nonce_indices")),
            parse_pubnonce,
        )
        .unwrap_or_else(|pos| panic!("{what}: nonce {pos} does not parse"));
        let aggnonce =
            parse_aggnonce(&aggnonce_bytes).unwrap_or_else(|| panic!("{what}: aggnonce parses"));
        assert_eq!(
            aggregate_nonces(&nonces).serialize().to_vec(),
            aggnonce_bytes,
            "{what}: the aggregate of the public nonces"
        );

        let mut cache = key_agg_cache(&keys);
        let chosen_tweaks = pick(&tweaks, &index_list(case, "tweak_indices"));
        apply_tweaks(&mut cache, &chosen_tweaks, &bool_list(case, "is_xonly"))
            .unwrap_or_else(|pos| panic!("{what}: tweak {pos} is rejected"));

        let session = Session::new(&cache, aggnonce, &msg);
        let (secnonce, secnonce_pk) =
            secnonce_from_bip327(&secnonce_bytes).expect("the secnonce converts");
        let psig = partial_sign(&session, secnonce, &secnonce_pk, &keypair, &cache);
        assert_eq!(
            psig.serialize().to_vec(),
            hex_field(case, "expected"),
            "{what}: partial signature"
        );
        assert!(
            session.partial_verify(&cache, &psig, &nonces[signer], keys[signer]),
            "{what}: partial_verify accepts the partial signature"
        );
        tally.check();
    }

    for (n, case) in cases(&data, "error_test_cases").iter().enumerate() {
        let what = format!("error case {n} ({})", comment(case));
        let error = expected_error(case);
        assert_eq!(error.kind, "value", "{what}: error kind");
        let keys = parse_all(
            &pick(&pubkeys, &index_list(case, "key_indices")),
            parse_pubkey,
        )
        .unwrap_or_else(|pos| panic!("{what}: key {pos} does not parse"));
        let mut cache = key_agg_cache(&keys);
        let chosen_tweaks = pick(&tweaks, &index_list(case, "tweak_indices"));
        assert!(
            apply_tweaks(&mut cache, &chosen_tweaks, &bool_list(case, "is_xonly")).is_err(),
            "{what}: a tweak must be rejected ({:?})",
            error.message
        );
        tally.check();
    }

    tally.finish("tweak_vectors.json", 6, 0);
}

#[test]
fn bip327_sig_agg_vectors() {
    let data = load(SIG_AGG);
    let mut tally = Tally::default();
    let pubkeys = hex_list(&data, "pubkeys");
    let pnonces = hex_list(&data, "pnonces");
    let tweaks = hex_list(&data, "tweaks");
    let psigs = hex_list(&data, "psigs");
    let msg = msg32(&hex_field(&data, "msg")).expect("sig-agg vector message is 32 bytes");

    for (n, case) in cases(&data, "valid_test_cases").iter().enumerate() {
        let what = format!("valid case {n}");
        let keys = parse_all(
            &pick(&pubkeys, &index_list(case, "key_indices")),
            parse_pubkey,
        )
        .unwrap_or_else(|pos| panic!("{what}: key {pos} does not parse"));
        let nonces = parse_all(
            &pick(&pnonces, &index_list(case, "nonce_indices")),
            parse_pubnonce,
        )
        .unwrap_or_else(|pos| panic!("{what}: nonce {pos} does not parse"));
        let aggnonce_bytes = hex_field(case, "aggnonce");
        let aggnonce =
            parse_aggnonce(&aggnonce_bytes).unwrap_or_else(|| panic!("{what}: aggnonce parses"));
        assert_eq!(
            aggregate_nonces(&nonces).serialize().to_vec(),
            aggnonce_bytes,
            "{what}: the aggregate of the public nonces"
        );

        let mut cache = key_agg_cache(&keys);
        let chosen_tweaks = pick(&tweaks, &index_list(case, "tweak_indices"));
        apply_tweaks(&mut cache, &chosen_tweaks, &bool_list(case, "is_xonly"))
            .unwrap_or_else(|pos| panic!("{what}: tweak {pos} is rejected"));
        let session = Session::new(&cache, aggnonce, &msg);

        let partials = parse_all(&pick(&psigs, &index_list(case, "psig_indices")), parse_psig)
            .unwrap_or_else(|pos| panic!("{what}: partial signature {pos} does not parse"));
        for (i, psig) in partials.iter().enumerate() {
            assert!(
                session.partial_verify(&cache, psig, &nonces[i], keys[i]),
                "{what}: partial signature {i} verifies"
            );
        }
        let refs: Vec<&PartialSignature> = partials.iter().collect();
        let aggregated = session.partial_sig_agg(&refs);
        assert_eq!(
            aggregated.assume_valid().to_byte_array().to_vec(),
            hex_field(case, "expected"),
            "{what}: aggregate signature"
        );
        assert!(
            aggregated.verify(&cache.agg_pk(), &msg).is_ok(),
            "{what}: the Schnorr signature verifies under the tweaked aggregate key"
        );
        tally.check();
    }

    for (n, case) in cases(&data, "error_test_cases").iter().enumerate() {
        let what = format!("error case {n} ({})", comment(case));
        let error = expected_error(case);
        assert_eq!(error.kind, "invalid_contribution", "{what}: error kind");
        assert!(
            matches!(error.contrib, None | Some("psig")),
            "{what}: the blamed contribution is a partial signature"
        );
        assert_eq!(
            only_failure(&pick(&psigs, &index_list(case, "psig_indices")), parse_psig),
            error.signer,
            "{what}: exactly the blamed signer's partial signature fails to parse"
        );
        tally.check();
    }

    tally.finish("sig_agg_vectors.json", 5, 0);
}
