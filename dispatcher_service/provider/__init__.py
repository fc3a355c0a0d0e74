"""The payout provider seam: the protocol the dispatcher relies on, and IntaSend's implementation of it."""
