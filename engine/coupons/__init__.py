"""Coupons: unique codes issued by delivered coupon actions, and their redemption."""
