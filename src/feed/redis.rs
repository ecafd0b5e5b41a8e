//! Redis pub/sub feed (the seed's setup). Filled in by the Redis issue.
