/// Element types found in safetensors files. Only the floating types can be read as f32 tensors.
public enum DType: String, Sendable, CaseIterable, Codable {
    case f64 = "F64", f32 = "F32", f16 = "F16", bf16 = "BF16"
    case i64 = "I64", i32 = "I32", i16 = "I16", i8 = "I8", u8 = "U8", u16 = "U16", u32 = "U32", u64 = "U64"
    case bool = "BOOL", f8e4m3 = "F8_E4M3", f8e5m2 = "F8_E5M2"

    public var byteSize: Int {
        switch self {
        case .f64, .i64, .u64: return 8
        case .f32, .i32, .u32: return 4
        case .f16, .bf16, .i16, .u16: return 2
        case .i8, .u8, .bool, .f8e4m3, .f8e5m2: return 1
        }
    }

    public var isFloatingPoint: Bool { self == .f32 || self == .f16 || self == .bf16 || self == .f64 }
}

/// Conversions between storage formats and f32. bf16 is a bit pattern (UInt16); f16 uses Swift's Float16,
/// which compiles to F16C instructions with `-target-cpu haswell`.
public enum Convert {
    @inline(__always) public static func bf16ToFloat(_ h: UInt16) -> Float {
        Float(bitPattern: UInt32(h) << 16)
    }

    /// Round to nearest even, as torch does; NaN stays NaN.
    @inline(__always) public static func floatToBF16(_ f: Float) -> UInt16 {
        let bits = f.bitPattern
        if f.isNaN { return UInt16(truncatingIfNeeded: (bits >> 16) | 0x40) }
        let rounding = UInt32(0x7FFF) + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ rounding) >> 16)
    }

    /// Widens `count` elements of `dtype` at `src` (unaligned allowed) into `dst`.
    public static func toFloat(_ src: UnsafeRawPointer, dtype: DType, count: Int, into dst: UnsafeMutablePointer<Float>) {
        switch dtype {
        case .f32:
            (UnsafeMutableRawPointer(dst)).copyMemory(from: src, byteCount: count * 4)
        case .bf16:
            if Int(bitPattern: src) % 2 == 0 {
                let s = src.assumingMemoryBound(to: UInt16.self)
                var i = 0
                while i + 8 <= count {
                    let v = SIMD8<UInt32>(truncatingIfNeeded: UnsafeRawPointer(s + i).loadUnaligned(as: SIMD8<UInt16>.self)) &<< 16
                    UnsafeMutableRawPointer(dst + i).storeBytes(of: unsafeBitCast(v, to: SIMD8<Float>.self), as: SIMD8<Float>.self)
                    i += 8
                }
                while i < count { dst[i] = bf16ToFloat(s[i]); i += 1 }
            } else {
                for i in 0..<count { dst[i] = bf16ToFloat(src.loadUnaligned(fromByteOffset: 2 * i, as: UInt16.self)) }
            }
        case .f16:
            var i = 0
            while i + 8 <= count {
                let h = src.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<Float16>.self)
                UnsafeMutableRawPointer(dst + i).storeBytes(of: SIMD8<Float>(h), as: SIMD8<Float>.self)
                i += 8
            }
            while i < count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 2 * i, as: Float16.self)); i += 1 }
        case .f64:
            for i in 0..<count { dst[i] = Float(src.loadUnaligned(fromByteOffset: 8 * i, as: Double.self)) }
        default:
            preconditionFailure("Convert.toFloat: \(dtype.rawValue) is not a floating type")
        }
    }

    /// Narrows f32 into `dtype` bytes (f32, f16 or bf16) at `dst`.
    public static func fromFloat(_ src: UnsafePointer<Float>, count: Int, dtype: DType, into dst: UnsafeMutableRawPointer) {
        switch dtype {
        case .f32:
            dst.copyMemory(from: src, byteCount: count * 4)
        case .bf16:
            for i in 0..<count { dst.storeBytes(of: floatToBF16(src[i]), toByteOffset: 2 * i, as: UInt16.self) }
        case .f16:
            for i in 0..<count { dst.storeBytes(of: Float16(src[i]), toByteOffset: 2 * i, as: Float16.self) }
        default:
            preconditionFailure("Convert.fromFloat: cannot write \(dtype.rawValue)")
        }
    }
}
