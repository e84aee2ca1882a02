/// The project's seeded random generator (SplitMix64): every random choice in MoEPress takes a seed
/// and draws from one of these, so the same inputs and seed give the same outputs on every machine.
public struct SeededGenerator: RandomNumberGenerator, Sendable {
    public private(set) var state: UInt64
    public init(seed: UInt64) { state = seed }
    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUnit() -> Double { Double(next() >> 11) * 0x1.0p-53 }
}

/// FNV-1a 64: the content hash of model and data fingerprints and of per-tensor seeds.
public enum FNV {
    public static let offsetBasis: UInt64 = 0xCBF2_9CE4_8422_2325
    /// FNV-1a over `bytes`. Inlinable so callers get a loop specialised to their byte container; contiguous
    /// bytes (Data, arrays, mapped files) go through a raw-pointer loop (GB/s, not the MB/s of a generic
    /// iterator, which made hashing a 28 GB model take half an hour).
    @inlinable public static func hash(_ bytes: some Sequence<UInt8>, _ start: UInt64 = offsetBasis) -> UInt64 {
        if let h = bytes.withContiguousStorageIfAvailable({ hash(raw: UnsafeRawBufferPointer($0), start) }) { return h }
        var h = start
        for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01B3 }
        return h
    }

    @inlinable public static func hash(raw bytes: UnsafeRawBufferPointer, _ start: UInt64 = offsetBasis) -> UInt64 {
        var h = start
        guard let p = bytes.baseAddress?.assumingMemoryBound(to: UInt8.self) else { return h }
        for i in 0..<bytes.count { h = (h ^ UInt64(p[i])) &* 0x100_0000_01B3 }
        return h
    }
}
