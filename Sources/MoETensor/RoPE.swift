import Foundation

/// Rotary position embedding with the HF `rope_type` variants MoE checkpoints use
/// (transformers `modeling_rope_utils.py`): default, linear, dynamic (at its base length), yarn, llama3.
public struct RoPE: Sendable {
    /// Inverse frequencies, one per rotated pair (rotaryDim / 2), in f32 as torch computes them.
    public let invFreq: [Float]
    /// Multiplies cos and sin (yarn's attention factor; 1 otherwise).
    public let attentionScaling: Float
    /// true: rotate adjacent pairs (x0,x1),(x2,x3)… (DeepSeek); false: rotate halves (x_i, x_{i+d/2}) (Llama/NeoX).
    public let interleaved: Bool
    /// Phi-MoE's longrope: beyond `positions` (a pass reaching a later position), cos and sin are multiplied by
    /// `scaling` instead of `attentionScaling` (its `long_mscale` against `short_mscale`).
    public var longScaling: (positions: Int, scaling: Float)?
    public var rotaryDim: Int { invFreq.count * 2 }

    public struct Parameters: Sendable, Equatable {
        public var type: String = "default"
        public var theta: Double = 10000
        public var factor: Double?
        public var originalMaxPositions: Int?
        public var attentionFactor: Double?
        public var betaFast: Double?
        public var betaSlow: Double?
        public var mscale: Double?
        public var mscaleAllDim: Double?
        public var lowFreqFactor: Double?
        public var highFreqFactor: Double?
        public var truncate: Bool = true
        public var partialRotaryFactor: Double = 1
        /// longrope (Phi): per-frequency divisors, and Phi-MoE's attention scalings for short and long passes.
        public var shortFactor: [Double]?
        public var longFactor: [Double]?
        public var shortMScale: Double?
        public var longMScale: Double?
        public init() {}
    }

    public init(invFreq: [Float], attentionScaling: Float = 1, interleaved: Bool = false, longScaling: (positions: Int, scaling: Float)? = nil) {
        self.invFreq = invFreq
        self.attentionScaling = attentionScaling
        self.interleaved = interleaved
        self.longScaling = longScaling
    }

    /// Builds the frequencies for a head of `headDim` dimensions (times `partialRotaryFactor`).
    public init(_ p: Parameters, headDim: Int, maxPositions: Int, interleaved: Bool = false) throws {
        let dim = Int(Double(headDim) * p.partialRotaryFactor)
        let base = p.theta
        // torch: base ** (arange(0, dim, 2).float() / dim), in f32
        let exponents = stride(from: 0, to: dim, by: 2).map { Float($0) / Float(dim) }
        let posFreqs = exponents.map { Float(pow(base, Double($0))) }
        var inv = posFreqs.map { 1 / $0 }
        var scaling: Double = 1
        var long: (positions: Int, scaling: Float)? = nil
        switch p.type {
        case "default", "dynamic":
            break
        case "linear":
            guard let f = p.factor else { throw TensorError.unsupported("rope_type linear without factor") }
            inv = inv.map { $0 / Float(f) }
        case "yarn":
            let omax = Double(p.originalMaxPositions ?? maxPositions)
            let factor = p.factor ?? Double(maxPositions) / omax
            func mscaleOf(_ s: Double, _ m: Double = 1) -> Double { s <= 1 ? 1 : 0.1 * m * log(s) + 1 }
            if let a = p.attentionFactor {
                scaling = a
            } else if let m = p.mscale, let mad = p.mscaleAllDim, m != 0, mad != 0 {
                scaling = mscaleOf(factor, m) / mscaleOf(factor, mad)
            } else {
                scaling = mscaleOf(factor)
            }
            let betaFast = (p.betaFast ?? 0) == 0 ? 32 : p.betaFast!
            let betaSlow = (p.betaSlow ?? 0) == 0 ? 1 : p.betaSlow!
            func correctionDim(_ rot: Double) -> Double {
                Double(dim) * log(omax / (rot * 2 * Double.pi)) / (2 * log(base))
            }
            var low = correctionDim(betaFast), high = correctionDim(betaSlow)
            if p.truncate { low = floor(low); high = ceil(high) }
            low = max(low, 0); high = min(high, Double(dim - 1))
            if low == high { high += 0.001 }
            inv = (0..<(dim / 2)).map { i in
                let ramp = Float(min(max((Double(i) - low) / (high - low), 0), 1))
                let extrapolationFactor = 1 - ramp
                let extra = 1 / posFreqs[i]
                let inter = 1 / (Float(factor) * posFreqs[i])
                return inter * (1 - extrapolationFactor) + extra * extrapolationFactor
            }
        case "llama3":
            guard let factor = p.factor, let lo = p.lowFreqFactor, let hi = p.highFreqFactor else {
                throw TensorError.unsupported("rope_type llama3 needs factor, low_freq_factor, high_freq_factor")
            }
            let old = Double(p.originalMaxPositions ?? maxPositions)
            let lowWave = old / lo, highWave = old / hi
            inv = inv.map { f in
                let wave = 2 * Double.pi / Double(f)
                let scaled: Float = wave > lowWave ? f / Float(factor) : f
                if wave < highWave || wave > lowWave { return scaled }
                let smooth = Float((old / wave - lo) / (hi - lo))
                return (1 - smooth) * scaled / Float(factor) + smooth * scaled
            }
        case "longrope":
            // transformers' `_compute_longrope_parameters` without a sequence length: the short factors. Phi-MoE's
            // rotary embedding calls it so on every pass (its long factors are never used), and replaces the
            // attention factor by `short_mscale`, or `long_mscale` once a pass reaches past the original length.
            guard let short = p.shortFactor, short.count == dim / 2, let omax = p.originalMaxPositions else {
                throw TensorError.unsupported("rope_type longrope needs short_factor (\(dim / 2) values) and original_max_position_embeddings")
            }
            inv = (0..<(dim / 2)).map { 1 / (Float(short[$0]) * posFreqs[$0]) }
            let factor = p.factor ?? Double(maxPositions) / Double(omax)
            scaling = p.attentionFactor ?? (factor <= 1 ? 1 : (1 + log(factor) / log(Double(omax))).squareRoot())
            if let s = p.shortMScale, let l = p.longMScale {
                scaling = s
                long = (omax, Float(l))
            }
        default:
            throw TensorError.unsupported("rope_type \"\(p.type)\" (supported: default, linear, dynamic, yarn, llama3, longrope)")
        }
        // A theta or factor that is finite but extreme (rope_theta 1e-300) gives infinite frequencies: every angle NaN.
        guard inv.allSatisfy({ $0.isFinite }), Float(scaling).isFinite, Float(scaling) > 0 else {
            throw TensorError.unsupported("rope_theta \(p.theta) with rope_type \(p.type) gives non-finite rotary frequencies")
        }
        self.init(invFreq: inv, attentionScaling: Float(scaling), interleaved: interleaved, longScaling: long)
    }

    /// cos and sin tables [positions.count, rotaryDim/2], already multiplied by the attention scaling.
    public func table(positions: [Int]) -> (cos: [Float], sin: [Float]) {
        let h = invFreq.count
        var c = [Float](repeating: 0, count: positions.count * h)
        var s = c
        var scale = attentionScaling
        if let long = longScaling, (positions.max() ?? 0) + 1 > long.positions { scale = long.scaling }
        for (t, p) in positions.enumerated() {
            let pf = Float(p)
            for i in 0..<h {
                let angle = Double(pf * invFreq[i])
                c[t * h + i] = Float(Foundation.cos(angle)) * scale
                s[t * h + i] = Float(Foundation.sin(angle)) * scale
            }
        }
        return (c, s)
    }

    /// Rotates, in place, `heads` vectors per token: token t's head h starts at
    /// `x + t * tokenStride + h * headStride + offset` and its first `rotaryDim` values are rotated.
    public func apply(
        _ x: UnsafeMutablePointer<Float>, tokens: Int, heads: Int, tokenStride: Int, headStride: Int,
        offset: Int = 0, table: (cos: [Float], sin: [Float])
    ) {
        let half = invFreq.count
        table.cos.withUnsafeBufferPointer { cs in
            table.sin.withUnsafeBufferPointer { sn in
                for t in 0..<tokens {
                    let c = cs.baseAddress! + t * half, s = sn.baseAddress! + t * half
                    for h in 0..<heads {
                        let v = x + t * tokenStride + h * headStride + offset
                        if interleaved {
                            for i in 0..<half {
                                let a = v[2 * i], b = v[2 * i + 1]
                                v[2 * i] = a * c[i] - b * s[i]
                                v[2 * i + 1] = b * c[i] + a * s[i]
                            }
                        } else {
                            for i in 0..<half {
                                let a = v[i], b = v[i + half]
                                v[i] = a * c[i] - b * s[i]
                                v[i + half] = b * c[i] + a * s[i]
                            }
                        }
                    }
                }
            }
        }
    }
}
