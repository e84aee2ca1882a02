import CKernels
import CBLAS
#if canImport(Glibc)
import Glibc
#endif

/// The instruction set MoEPress's own kernels (products with bf16/f16 weights) run with. The best one the
/// CPU supports is chosen at start-up; `MOEPRESS_ISA=portable|avx2|avx512` forces one (an unsupported choice
/// is refused with a message). All of them give bit-identical results (see CKernels/moepress_kernels.h).
public enum KernelISA: Int32, CaseIterable, Sendable, CustomStringConvertible {
    case portable = 0, avx2 = 1, avx512 = 2

    public var description: String {
        switch self {
        case .portable: "portable"
        case .avx2: "avx2"
        case .avx512: "avx512"
        }
    }

    public init?(name: String) {
        guard let v = Self.allCases.first(where: { $0.description == name.lowercased() }) else { return nil }
        self = v
    }

    public var isSupported: Bool { mpk_isa_supported(rawValue) != 0 }
    public static var best: KernelISA { KernelISA(rawValue: mpk_isa_best()) ?? .portable }
    public static var current: KernelISA { KernelISA(rawValue: mpk_isa()) ?? .portable }

    /// Uses `isa` from now on (tests compare the paths); false when this CPU cannot run it.
    @discardableResult
    public static func use(_ isa: KernelISA) -> Bool { mpk_set_isa(isa.rawValue) == 0 }

    /// Applies `MOEPRESS_ISA`; returns an error message when it names an unknown or unsupported set.
    public static func configureFromEnvironment() -> String? {
        guard let raw = getenv("MOEPRESS_ISA") else { return nil }
        return configure(named: String(cString: raw))
    }

    /// Applies an instruction set named as `MOEPRESS_ISA` names it (empty: no change); returns an error message
    /// when the name is unknown or the CPU cannot run it.
    public static func configure(named name: String) -> String? {
        if name.isEmpty { return nil }
        guard let isa = KernelISA(name: name) else {
            return "MOEPRESS_ISA=\(name) is not one of \(allCases.map(\.description).joined(separator: ", "))"
        }
        guard use(isa) else { return "MOEPRESS_ISA=\(name): this CPU cannot run \(isa) (best: \(best))" }
        return nil
    }
}

/// The C kernel's code for a weight storage type.
@inline(__always) func kernelType(_ d: DType) -> Int32 {
    switch d {
    case .f32: return Int32(MPK_F32)
    case .f16: return Int32(MPK_F16)
    case .bf16: return Int32(MPK_BF16)
    default: preconditionFailure("no kernel reads \(d.rawValue) weights")
    }
}

/// OpenBLAS picks its kernels by CPU model when it loads. Debian's OpenBLAS 0.3.21 does not know newer CPUs
/// (Sapphire/Emerald Rapids among them) and falls back to its generic "Prescott" SSE3 kernels, 3–4× slower
/// for the GEMMs of attention, training and SVD. The choice can only be made before the library loads
/// (`OPENBLAS_CORETYPE`), so a process that finds itself on the fallback re-executes itself once with the
/// core its instruction set supports.
public enum BLASRuntime {
    public static var coreName: String { openblas_get_corename().map { String(cString: $0) } ?? "unknown" }

    /// The core OpenBLAS should use on this CPU when it fell back to a generic one, or nil when it need not.
    public static var betterCore: String? {
        guard ["prescott", "unknown", "core2", "katmai", "coppermine", "northwood"].contains(coreName.lowercased()) else { return nil }
        if KernelISA.avx512.isSupported { return "SkylakeX" }
        if KernelISA.avx2.isSupported { return "Haswell" }
        return nil
    }

    /// Re-executes this program with `OPENBLAS_CORETYPE` set when OpenBLAS fell back to generic kernels and the
    /// user did not choose a core; returns (doing nothing) otherwise or if re-execution fails.
    public static func reexecWithBetterCoreIfNeeded() {
        guard getenv("OPENBLAS_CORETYPE") == nil, let core = betterCore else { return }
        setenv("OPENBLAS_CORETYPE", core, 1)
        execv("/proc/self/exe", CommandLine.unsafeArgv)
    }
}
