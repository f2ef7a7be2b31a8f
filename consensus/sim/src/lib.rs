//! A deterministic simulator that runs vpbox consensus engines under seeded faults and checks their invariants.
