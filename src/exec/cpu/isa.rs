//! Run-time choice of instruction set for the hand-written CPU kernels.

/// Which instructions the hand-written CPU kernels are compiled for, chosen at run time: the
/// same binary runs on any x86-64 (or other) CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// Whatever the build targets (SSE2 on a default x86-64 build).
    Portable,
    /// AVX2 and FMA (x86-64 since Haswell / Zen).
    Avx2,
}

impl Isa {
    /// The best the CPU offers; `UNETC_CPU_ISA=portable` forces the portable code.
    pub fn detect() -> Isa {
        if std::env::var_os("UNETC_CPU_ISA").is_some_and(|v| v == "portable") {
            return Isa::Portable;
        }
        #[cfg(target_arch = "x86_64")]
        if is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma") {
            return Isa::Avx2;
        }
        Isa::Portable
    }

    /// [`Isa::detect`], once per process.
    pub fn current() -> Isa {
        static ISA: std::sync::OnceLock<Isa> = std::sync::OnceLock::new();
        *ISA.get_or_init(Isa::detect)
    }
}
