//! Reading and writing arrays, images and weights. Every file is untrusted input.
