//! Runnable examples of sheepfs; see the `examples` of this package.
