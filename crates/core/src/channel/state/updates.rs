//! HTLC updates of a channel: add, fulfill and fail, checked against both sides' limits.

use super::*;

impl Channel {
    pub(super) fn check_add(
        &self,
        state: &State,
        offered_by_us: bool,
        add: &UpdateAddHtlc,
        height: u32,
    ) -> Result<(), ChannelError> {
        // The receiver's limits apply.
        let limits = if offered_by_us {
            &self.their_limits
        } else {
            &self.limits
        };
        if add.amount_msat < limits.htlc_minimum_msat || add.amount_msat == 0 {
            return Err(ChannelError::HtlcTooSmall {
                amount: add.amount_msat,
                min: limits.htlc_minimum_msat.max(1),
            });
        }
        let (flight, count) = state.in_flight(offered_by_us);
        if count + 1 > usize::from(limits.max_accepted_htlcs) {
            return Err(ChannelError::TooManyHtlcs(limits.max_accepted_htlcs));
        }
        if flight.saturating_add(add.amount_msat) > limits.max_htlc_value_in_flight_msat {
            return Err(ChannelError::TooMuchInFlight(
                limits.max_htlc_value_in_flight_msat,
            ));
        }
        let balance = if offered_by_us {
            state.ours_msat
        } else {
            state.theirs_msat
        };
        let available = balance.saturating_sub(limits.channel_reserve_msat);
        if add.amount_msat > available {
            return Err(ChannelError::InsufficientBalance {
                amount: add.amount_msat,
                available,
            });
        }
        if add.cltv_expiry >= LOCKTIME_THRESHOLD {
            return Err(ChannelError::ExpiryIsTimestamp(add.cltv_expiry));
        }
        // Both sides' latest expiry applies, whichever side offers: an HTLC must resolve while
        // the factory can still be exited.
        let max = self
            .limits
            .max_cltv_expiry
            .min(self.their_limits.max_cltv_expiry);
        if add.cltv_expiry > max {
            return Err(ChannelError::ExpiryTooLate {
                expiry: add.cltv_expiry,
                max,
            });
        }
        if add.cltv_expiry < height.saturating_add(limits.min_cltv_expiry_delta) {
            return Err(ChannelError::ExpiryTooSoon {
                expiry: add.cltv_expiry,
                height,
                delta: limits.min_cltv_expiry_delta,
            });
        }
        Ok(())
    }

    pub(super) fn apply_add(state: &mut State, offered_by_us: bool, add: &UpdateAddHtlc) {
        if offered_by_us {
            state.ours_msat -= add.amount_msat;
        } else {
            state.theirs_msat -= add.amount_msat;
        }
        state.htlcs.insert(
            (offered_by_us, add.id),
            HtlcEntry {
                offered_by_us,
                id: add.id,
                amount_msat: add.amount_msat,
                payment_hash: add.payment_hash,
                cltv_expiry: add.cltv_expiry,
            },
        );
    }

    pub(super) fn ensure_can_update(&self) -> Result<(), ChannelError> {
        match self.phase {
            Phase::Idle => Ok(()),
            _ => Err(ChannelError::WrongPhase(
                "updates wait until the current round is complete",
            )),
        }
    }

    /// Offer an HTLC to the other side.
    pub fn add_htlc(
        &mut self,
        amount_msat: u64,
        payment_hash: [u8; 32],
        cltv_expiry: u32,
        height: u32,
    ) -> Result<UpdateAddHtlc, ChannelError> {
        self.ensure_can_update()?;
        let add = UpdateAddHtlc {
            id: self.next_our_id,
            amount_msat,
            payment_hash,
            cltv_expiry,
        };
        self.check_add(&self.next, true, &add, height)?;
        Self::apply_add(&mut self.next, true, &add);
        self.next_our_id += 1;
        Ok(add)
    }

    /// Take an HTLC the other side offers.
    pub fn receive_add(&mut self, add: &UpdateAddHtlc, height: u32) -> Result<(), ChannelError> {
        self.ensure_can_update()?;
        if add.id != self.next_their_id {
            return Err(ChannelError::BadHtlcId(add.id));
        }
        self.check_add(&self.next, false, add, height)?;
        Self::apply_add(&mut self.next, false, add);
        self.next_their_id += 1;
        Ok(())
    }

    pub(super) fn settle(state: &mut State, offered_by_us: bool, id: u64, success: bool) {
        let h = state
            .htlcs
            .remove(&(offered_by_us, id))
            .expect("checked by the caller");
        // Fulfilled: the receiver of the HTLC gets it; failed: it returns to its offerer.
        let to_us = offered_by_us != success;
        if to_us {
            state.ours_msat += h.amount_msat;
        } else {
            state.theirs_msat += h.amount_msat;
        }
    }

    pub(super) fn find(&self, offered_by_us: bool, id: u64) -> Result<HtlcEntry, ChannelError> {
        // Only HTLCs already committed by both sides can be settled.
        match (
            self.committed.htlcs.get(&(offered_by_us, id)),
            self.next.htlcs.get(&(offered_by_us, id)),
        ) {
            (Some(h), Some(_)) => Ok(*h),
            _ => Err(ChannelError::UnknownHtlc(id)),
        }
    }

    /// Settle an HTLC the other side offered us, with its preimage.
    pub fn fulfill_htlc(
        &mut self,
        id: u64,
        preimage: [u8; 32],
    ) -> Result<UpdateFulfillHtlc, ChannelError> {
        self.ensure_can_update()?;
        let h = self.find(false, id)?;
        if sha256::Hash::hash(&preimage).to_byte_array() != h.payment_hash {
            return Err(ChannelError::WrongPreimage(id));
        }
        Self::settle(&mut self.next, false, id, true);
        Ok(UpdateFulfillHtlc { id, preimage })
    }

    /// The other side settles an HTLC we offered; returns the preimage to pass upstream.
    pub fn receive_fulfill(&mut self, msg: &UpdateFulfillHtlc) -> Result<[u8; 32], ChannelError> {
        self.ensure_can_update()?;
        let h = self.find(true, msg.id)?;
        if sha256::Hash::hash(&msg.preimage).to_byte_array() != h.payment_hash {
            return Err(ChannelError::WrongPreimage(msg.id));
        }
        Self::settle(&mut self.next, true, msg.id, true);
        Ok(msg.preimage)
    }

    /// Fail an HTLC the other side offered us.
    pub fn fail_htlc(&mut self, id: u64) -> Result<UpdateFailHtlc, ChannelError> {
        self.ensure_can_update()?;
        self.find(false, id)?;
        Self::settle(&mut self.next, false, id, false);
        Ok(UpdateFailHtlc { id })
    }

    /// The other side fails an HTLC we offered.
    pub fn receive_fail(&mut self, msg: &UpdateFailHtlc) -> Result<(), ChannelError> {
        self.ensure_can_update()?;
        self.find(true, msg.id)?;
        Self::settle(&mut self.next, true, msg.id, false);
        Ok(())
    }
}
