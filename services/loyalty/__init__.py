"""Loyalty: points ledger, tiers, referrals, expiry, redemption."""
