"""Engagement: reach customers (email, SMS, push), give them offers, measure what worked."""
