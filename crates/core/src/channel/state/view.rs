//! What a daemon reads of a channel side: its commitment numbers, whether it awaits the other
//! side, and its HTLCs.

use super::*;

/// An HTLC of the channel, seen from this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HtlcView {
    /// Whether this side offered it.
    pub offered_by_us: bool,
    /// Its offerer's id for it.
    pub id: u64,
    /// Its amount.
    pub amount_msat: u64,
    /// Its payment hash.
    pub payment_hash: [u8; 32],
    /// Its absolute expiry.
    pub cltv_expiry: u32,
}

impl From<&HtlcEntry> for HtlcView {
    fn from(h: &HtlcEntry) -> Self {
        HtlcView {
            offered_by_us: h.offered_by_us,
            id: h.id,
            amount_msat: h.amount_msat,
            payment_hash: h.payment_hash,
            cltv_expiry: h.cltv_expiry,
        }
    }
}

impl Channel {
    /// (Our latest commitment number, theirs.)
    pub fn commitment_numbers(&self) -> (u64, u64) {
        (self.our_commitment_number, self.their_commitment_number)
    }

    /// Whether this side started a round and waits for the other side's revocation and
    /// signature.
    pub fn awaits_reply(&self) -> bool {
        self.phase
            == Phase::SentSignature {
                got_revocation: false,
            }
    }

    /// Whether this side answered a round and waits for the other side's final revocation.
    pub fn awaits_final_revocation(&self) -> bool {
        self.phase == Phase::AwaitingFinalRevocation
    }

    /// The HTLCs committed by both sides.
    pub fn committed_htlcs(&self) -> Vec<HtlcView> {
        self.committed.htlcs.values().map(HtlcView::from).collect()
    }

    /// The HTLCs with the updates proposed so far.
    pub fn next_htlcs(&self) -> Vec<HtlcView> {
        self.next.htlcs.values().map(HtlcView::from).collect()
    }

    /// One HTLC with the updates proposed so far, by offerer and id.
    pub fn htlc(&self, offered_by_us: bool, id: u64) -> Option<HtlcView> {
        self.next
            .htlcs
            .get(&(offered_by_us, id))
            .or_else(|| self.committed.htlcs.get(&(offered_by_us, id)))
            .map(HtlcView::from)
    }

    /// The limits this side imposes, and the other side's.
    pub fn limits(&self) -> (&ChannelLimits, &ChannelLimits) {
        (&self.limits, &self.their_limits)
    }

    /// The channel's output (the factory leaf output it lives on).
    pub fn funding_outpoint(&self) -> OutPoint {
        self.funding_outpoint
    }

    /// Whether this side holds the other side's signature of its latest commitment spending
    /// the live funding outpoint `outpoint`.
    pub fn holds_commitment_on(&self, outpoint: &OutPoint) -> bool {
        if *outpoint == self.funding_outpoint {
            return self.our_latest_sig.is_some();
        }
        self.our_latest_other.contains_key(outpoint)
    }

    /// The other live funding outpoints on which the other side's verification nonce for its
    /// next commitment is not known yet (no commitment can be signed until it is).
    pub fn fundings_awaiting_nonce(&self) -> Vec<OutPoint> {
        let n = self.their_commitment_number + 1;
        self.other_fundings
            .iter()
            .filter(|o| !self.their_other_nonces.contains_key(&(**o, n)))
            .copied()
            .collect()
    }

    /// The channel's capacity (msat).
    pub fn capacity_msat(&self) -> u64 {
        self.funding.value.to_sat().saturating_mul(1000)
    }
}
