import CKernels
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
        let name = String(cString: raw)
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
