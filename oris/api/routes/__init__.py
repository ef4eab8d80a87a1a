"""HTTP routers: parse input, call one service, return the envelope."""
