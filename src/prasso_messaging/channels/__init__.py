"""Channels: email, SMS, push and in-app, each behind the contract in `channels/base.py`."""
