"""Pure rules of the runtime: states, transitions, retry math, validation. No I/O."""
