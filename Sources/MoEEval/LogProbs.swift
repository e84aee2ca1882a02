import MoETensor

/// log-softmax reads of logit rows. The log-sum-exp is taken in f32 with the vectorised exp and summed
/// in f64, so a row of 32k logits loses no precision that matters at the 1e-4 level.
public enum LogProbs {
    /// log p(target) for one row of `count` logits.
    public static func logProb(_ row: UnsafePointer<Float>, count: Int, target: Int) -> Double {
        Double(row[target]) - logSumExp(row, count: count)
    }

    /// NaN when any logit is NaN or +∞ (so garbage never passes for a finite score).
    public static func logSumExp(_ row: UnsafePointer<Float>, count n: Int) -> Double {
        var m = -Float.infinity
        var nan = false
        for i in 0..<n { m = max(m, row[i]); nan = nan || row[i].isNaN }
        if nan || m == .infinity { return .nan }
        if m == -.infinity { return -.infinity }
        var s: Double = 0
        var i = 0
        let mv = SIMD8<Float>(repeating: m)
        while i + 8 <= n {
            let v = UnsafeRawPointer(row + i).loadUnaligned(as: SIMD8<Float>.self)
            s += Double(VectorMath.exp(v - mv).sum())
            i += 8
        }
        while i < n { s += Double(VectorMath.exp(SIMD8<Float>(repeating: row[i] - m))[0]); i += 1 }
        return Double(m) + log(s)
    }
}

#if canImport(Glibc)
import Glibc
#endif
