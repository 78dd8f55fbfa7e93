"""Webhook notification channels (Slack, Teams, OpsMedic JSON) through a durable outbox."""
