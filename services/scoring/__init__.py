"""Streaming scorer: live customer profiles (work in progress: the customer-base models)."""
