//! The live window as a Redis sorted set. Filled in by the Redis issue.
