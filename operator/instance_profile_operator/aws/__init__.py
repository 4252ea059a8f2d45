"""The AWS edge: credentials and accounts, trimmed API models, the EC2 gateway, its rate
limiter and the batched observer."""
