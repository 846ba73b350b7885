"""Providers speak protocols (SMTP, Twilio's REST API, Web Push) or keep the local outbox."""
