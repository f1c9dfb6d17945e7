//! Local multipath: one payment split across the several channels a client holds with the LSP
//! (its first channel and those bought from the liquidity stock), all parts sharing one payment
//! hash, so a client can pay or receive more than any single channel carries.

use thiserror::Error;

/// A payment the channels cannot carry.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MultipathError {
    /// Nothing to pay.
    #[error("a payment of 0 msat")]
    Zero,
    /// More than all channels together can carry.
    #[error(
        "{amount_msat} msat exceeds the {available_msat} msat the channels can carry together"
    )]
    Insufficient {
        /// The payment.
        amount_msat: u64,
        /// What all channels can carry.
        available_msat: u64,
    },
}

/// Split `amount_msat` over channels that can each carry `available_msat[i]`, fullest channel
/// first (fewest parts). Returns one part per channel, in the order given (0 = unused).
pub fn split(amount_msat: u64, available_msat: &[u64]) -> Result<Vec<u64>, MultipathError> {
    if amount_msat == 0 {
        return Err(MultipathError::Zero);
    }
    let total = available_msat
        .iter()
        .fold(0u64, |a, b| a.saturating_add(*b));
    if amount_msat > total {
        return Err(MultipathError::Insufficient {
            amount_msat,
            available_msat: total,
        });
    }
    let mut order: Vec<usize> = (0..available_msat.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(available_msat[*i]));
    let mut parts = vec![0u64; available_msat.len()];
    let mut left = amount_msat;
    for i in order {
        let take = left.min(available_msat[i]);
        parts[i] = take;
        left -= take;
        if left == 0 {
            break;
        }
    }
    Ok(parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn larger_than_any_channel_uses_several() {
        assert_eq!(split(90, &[50, 60]).unwrap(), vec![30, 60]);
        assert_eq!(split(60, &[50, 60]).unwrap(), vec![0, 60]);
        assert_eq!(
            split(111, &[50, 60]),
            Err(MultipathError::Insufficient {
                amount_msat: 111,
                available_msat: 110
            })
        );
        assert_eq!(split(0, &[5]), Err(MultipathError::Zero));
        assert!(split(1, &[]).is_err());
    }

    proptest! {
        #[test]
        fn parts_sum_to_the_amount_and_fit(amount in 1u64..1_000_000, avail in proptest::collection::vec(0u64..400_000, 0..6)) {
            match split(amount, &avail) {
                Ok(parts) => {
                    prop_assert_eq!(parts.iter().sum::<u64>(), amount);
                    for (p, a) in parts.iter().zip(&avail) {
                        prop_assert!(p <= a);
                    }
                }
                Err(MultipathError::Insufficient { available_msat, .. }) => {
                    prop_assert!(available_msat < amount);
                    prop_assert_eq!(available_msat, avail.iter().sum::<u64>());
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}
