"""The Docker engine: listing, inspect, logs, events, acting, clean-up leftovers."""
