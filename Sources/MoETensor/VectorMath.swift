/// Vectorised exp and the row operations built on it. `exp` uses the classic Cephes scheme (range
/// reduction by ln 2 in two parts, a degree-6 polynomial on [−ln2/2, ln2/2], scaling by 2ⁿ through
/// the exponent bits): within 2 ulp of the correctly rounded result over the f32 range, exactly 0
/// below −87.3 (so −∞ masks give 0), +∞ above 88.72.
public enum VectorMath {
    public typealias V = SIMD8<Float>

    @inline(__always) public static func exp(_ x: V) -> V {
        let hi: Float = 88.722_83, lo: Float = -87.336_54
        var v = x.clamped(lowerBound: V(repeating: lo), upperBound: V(repeating: hi))
        // n = round(x / ln 2) by the 1.5·2²³ trick: adding it rounds to an integer held in the low mantissa
        // bits, readable as an Int32 without a (slow, lane-by-lane) float-to-int conversion.
        let magic = V(repeating: 12_582_912)
        let n = (v * 1.442_695_040_888_963_4 + magic) - magic
        v = v - n * 0.693_359_375           // ln 2, high part (exact in f32)
        v = v - n * -2.121_944_400_546_905_8e-4  // ln 2, low part
        var p = V(repeating: 1.987_569_150_0e-4)
        p = p * v + 1.398_199_950_7e-3
        p = p * v + 8.333_451_907_3e-3
        p = p * v + 4.166_579_589_4e-2
        p = p * v + 1.666_666_545_9e-1
        p = p * v + 5.000_000_120_1e-1
        p = p * (v * v) + v + 1
        // 2ⁿ through the exponent bits; n = 128 (x near the top of the range) is split as 2¹²⁷ · 2.
        // Masks stay in the float domain: integer SIMD comparisons compile to scalar loops.
        let big = V.zero.replacing(with: 1, where: n .> 127)
        let bits = unsafeBitCast((n - big) + magic, to: SIMD8<Int32>.self) &- unsafeBitCast(magic, to: SIMD8<Int32>.self)
        var r = p * unsafeBitCast((bits &+ 127) &<< 23, to: V.self) * (1 + big)
        r.replace(with: 0, where: x .< lo)
        r.replace(with: .infinity, where: x .> hi)
        // NaN stays NaN (the clamp above would turn it into a finite number and hide garbage input).
        r.replace(with: x, where: x .!= x)
        return r
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> V { UnsafeRawPointer(p).loadUnaligned(as: V.self) }
    @inline(__always) static func store(_ v: V, _ p: UnsafeMutablePointer<Float>) { UnsafeMutableRawPointer(p).storeBytes(of: v, as: V.self) }

    /// x ← softmax(x), numerically stable.
    public static func softmaxInPlace(_ x: UnsafeMutablePointer<Float>, count n: Int) {
        var m = -Float.infinity
        var i = 0
        var nan = false
        if n >= 8 {
            var mv = V(repeating: -.infinity)
            var bad = V.zero
            while i + 8 <= n { let v = load(x + i); mv = pointwiseMax(mv, v); bad.replace(with: 1, where: v .!= v); i += 8 }
            m = mv.max()
            nan = bad.max() > 0
        }
        while i < n { m = Swift.max(m, x[i]); nan = nan || x[i].isNaN; i += 1 }
        // A NaN score makes the whole row NaN (max() skips NaN; a masked row of -inf is zeros).
        if nan { x.update(repeating: .nan, count: n); return }
        if m == -.infinity { (x).update(repeating: 0, count: n); return }
        var sv = V.zero
        var s: Float = 0
        i = 0
        while i + 8 <= n {
            let e = exp(load(x + i) - m)
            store(e, x + i)
            sv += e
            i += 8
        }
        if i < n {
            var tail = V(repeating: -.infinity)
            for j in i..<n { tail[j - i] = x[j] }
            let e = exp(tail - m)
            for j in i..<n { x[j] = e[j - i]; s += e[j - i] }
        }
        s += sv.sum()
        let inv = 1 / s
        i = 0
        while i + 8 <= n { store(load(x + i) * inv, x + i); i += 8 }
        while i < n { x[i] *= inv; i += 1 }
    }

    /// out = silu(gate) ⊙ up.
    public static func siluGLU(gate: UnsafePointer<Float>, up: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, count n: Int) {
        var i = 0
        while i + 8 <= n {
            let g = load(gate + i)
            store(g / (1 + exp(-g)) * load(up + i), out + i)
            i += 8
        }
        while i < n { out[i] = gate[i] / (1 + expf_(-gate[i])) * up[i]; i += 1 }
    }

    @inline(__always) static func expf_(_ x: Float) -> Float { exp(V(repeating: x))[0] }
}
