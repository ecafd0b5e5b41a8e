//! MongoDB store (the seed's setup). Filled in by the MongoDB issue.
