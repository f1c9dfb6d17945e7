//! BOLT-3 Appendix D: per-commitment secret generation and storage vectors.

use superscalar_core::shachain::{
    index_of, SecretGenerator, SecretStore, ShachainError, FIRST_INDEX,
};

fn h(s: &str) -> [u8; 32] {
    hex::decode(s.trim_start_matches("0x"))
        .unwrap()
        .try_into()
        .unwrap()
}

#[test]
fn generation_vectors() {
    let cases = [
        (
            "0000000000000000000000000000000000000000000000000000000000000000",
            281474976710655u64,
            "02a40c85b6f28da08dfdbe0926c53fab2de6d28c10301f8f7c4073d5e42e3148",
        ),
        (
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            281474976710655,
            "7cc854b54e3e0dcdb010d7a3fee464a9687be6e8db3be6854c475621e007a5dc",
        ),
        (
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            0xaaaaaaaaaaa,
            "56f4008fb007ca9acf0e15b054d5c9fd12ee06cea347914ddbaed70d1c13a528",
        ),
        (
            "FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF",
            0x555555555555,
            "9015daaeb06dba4ccc05b91b2f73bd54405f2be9f217fbacd3c5ac2e62327d31",
        ),
        (
            "0101010101010101010101010101010101010101010101010101010101010101",
            1,
            "915c75942a26bb3a433a8ce2cb0427c29ec6c1775cfc78328b57f6ba7bfeaa9c",
        ),
    ];
    for (seed, index, expected) in cases {
        assert_eq!(
            SecretGenerator::new(h(seed)).secret(index).unwrap(),
            h(expected),
            "index {index}"
        );
    }
    assert_eq!(
        SecretGenerator::new([0; 32]).secret(1 << 48),
        Err(ShachainError::IndexOutOfRange(1 << 48))
    );
}

const CORRECT: [&str; 8] = [
    "7cc854b54e3e0dcdb010d7a3fee464a9687be6e8db3be6854c475621e007a5dc",
    "c7518c8ae4660ed02894df8976fa1a3659c1a8b4b5bec0c4b872abeba4cb8964",
    "2273e227a5b7449b6e70f1fb4652864038b1cbf9cd7c043a7d6456b7fc275ad8",
    "27cddaa5624534cb6cb9d7da077cf2b22ab21e9b506fd4998a51d54502e99116",
    "c65716add7aa98ba7acb236352d665cab17345fe45b55fb879ff80e6bd0c41dd",
    "969660042a28f32d9be17344e09374b379962d03db1574df5a8a5a47e19ce3f2",
    "a5a64476122ca0925fb344bdc1854c1c0a59fc614298e50a33e331980a220f32",
    "05cde6323d949933f7f7b78776bcc1ea6d9b31447732e3802e1f7ac44b650e17",
];

/// Insert `secrets` from index 2^48-1 down; all but the last must be accepted, and the last is
/// accepted iff `last_ok`. After each accepted insertion, every earlier secret is derivable.
fn run(secrets: &[&str], last_ok: bool) {
    let mut store = SecretStore::new();
    for (n, s) in secrets.iter().enumerate() {
        let index = FIRST_INDEX - n as u64;
        let before = store.clone();
        let res = store.provide(index, h(s));
        if n + 1 < secrets.len() || last_ok {
            res.unwrap();
            for (m, earlier) in secrets[..=n].iter().enumerate() {
                assert_eq!(store.get(FIRST_INDEX - m as u64), Some(h(earlier)));
            }
        } else {
            assert_eq!(res, Err(ShachainError::Inconsistent { index }));
            assert_eq!(store, before, "a refused secret leaves the store unchanged");
            assert_eq!(store.get(index), None);
        }
    }
}

#[test]
fn storage_vectors() {
    run(&CORRECT, true);
    // #1 incorrect
    run(
        &[
            "02a40c85b6f28da08dfdbe0926c53fab2de6d28c10301f8f7c4073d5e42e3148",
            CORRECT[1],
        ],
        false,
    );
    // #2 incorrect (#1 derived from incorrect)
    run(
        &[
            "02a40c85b6f28da08dfdbe0926c53fab2de6d28c10301f8f7c4073d5e42e3148",
            "dddc3a8d14fddf2b68fa8c7fbad2748274937479dd0f8930d5ebb4ab6bd866a3",
            CORRECT[2],
            CORRECT[3],
        ],
        false,
    );
    // #3 incorrect
    run(
        &[
            CORRECT[0],
            CORRECT[1],
            "c51a18b13e8527e579ec56365482c62f180b7d5760b46e9477dae59e87ed423a",
            CORRECT[3],
        ],
        false,
    );
    // #4 incorrect (1,2,3 derived from incorrect)
    run(
        &[
            "02a40c85b6f28da08dfdbe0926c53fab2de6d28c10301f8f7c4073d5e42e3148",
            "dddc3a8d14fddf2b68fa8c7fbad2748274937479dd0f8930d5ebb4ab6bd866a3",
            "c51a18b13e8527e579ec56365482c62f180b7d5760b46e9477dae59e87ed423a",
            "ba65d7b0ef55a3ba300d4e87af29868f394f8f138d78a7011669c79b37b936f4",
            CORRECT[4],
            CORRECT[5],
            CORRECT[6],
            CORRECT[7],
        ],
        false,
    );
    // #5 incorrect
    run(
        &[
            CORRECT[0],
            CORRECT[1],
            CORRECT[2],
            CORRECT[3],
            "631373ad5f9ef654bb3dade742d09504c567edd24320d2fcd68e3cc47e2ff6a6",
            CORRECT[5],
        ],
        false,
    );
    // #6 incorrect (5 derived from incorrect)
    run(
        &[
            CORRECT[0],
            CORRECT[1],
            CORRECT[2],
            CORRECT[3],
            "631373ad5f9ef654bb3dade742d09504c567edd24320d2fcd68e3cc47e2ff6a6",
            "b7e76a83668bde38b373970155c868a653304308f9896692f904a23731224bb1",
            CORRECT[6],
            CORRECT[7],
        ],
        false,
    );
    // #7 incorrect
    run(
        &[
            CORRECT[0],
            CORRECT[1],
            CORRECT[2],
            CORRECT[3],
            CORRECT[4],
            CORRECT[5],
            "e7971de736e01da8ed58b94c2fc216cb1dca9e326f3a96e7194fe8ea8af6c0a3",
            CORRECT[7],
        ],
        false,
    );
    // #8 incorrect
    run(
        &[
            CORRECT[0],
            CORRECT[1],
            CORRECT[2],
            CORRECT[3],
            CORRECT[4],
            CORRECT[5],
            CORRECT[6],
            "a7efbc61aac46d34f77778bac22c8a20c6a46ca460addc49009bda875ec88fa4",
        ],
        false,
    );
}

#[test]
fn a_thousand_secrets_take_logarithmic_space() {
    let gen = SecretGenerator::new([0x5e; 32]);
    let mut store = SecretStore::new();
    let mut max_stored = 0;
    for n in 0..1000u64 {
        store
            .provide(index_of(n), gen.secret(index_of(n)).unwrap())
            .unwrap();
        max_stored = max_stored.max(store.stored());
    }
    // ceil(log2(1000)) = 10, plus the slot for the newest secret.
    assert!(max_stored <= 11, "stored {max_stored}");
    for n in [0u64, 1, 500, 998, 999] {
        assert_eq!(
            store.get(index_of(n)),
            Some(gen.secret(index_of(n)).unwrap())
        );
    }
    assert_eq!(store.get(index_of(1000)), None, "not received yet");
    assert_eq!(store.get(1 << 50), None);
}
