"""Mail: composing, the durable SMTP outbox, the IMAP reply watcher, reply parsing."""
