import MoETensor

/// Pre-norm decoder layer: x += attn(norm(x)); x += ffn(norm(x)).
public struct DecoderLayer: Sendable {
    public var inputNorm: RMSNorm
    public var attention: any AttentionLayer
    public var postAttentionNorm: RMSNorm
    public var feedForward: FeedForward

    public init(inputNorm: RMSNorm, attention: any AttentionLayer, postAttentionNorm: RMSNorm, feedForward: FeedForward) {
        self.inputNorm = inputNorm
        self.attention = attention
        self.postAttentionNorm = postAttentionNorm
        self.feedForward = feedForward
    }

    public var parameterCount: Int {
        inputNorm.dim + attention.parameterCount + postAttentionNorm.dim + feedForward.parameterCount
    }

    /// Runs the layer in place on the residual stream `x`. `observe`, when given, receives the
    /// feed-forward input (post-attention-norm hidden states) and output, for calibration.
    public func forward(_ x: Tensor, segments: [AttentionSegment], observe: ((Tensor, Tensor) -> Void)? = nil) {
        let a = Profiler.measure("attention") { attention.forward(inputNorm(x), segments: segments) }
        x.add(a)
        let h = postAttentionNorm(x)
        let f = Profiler.measure("feed-forward") { feedForward(h) }
        observe?(h, f)
        x.add(f)
    }
}

/// A decoder-only causal language model assembled from shared parts by a family file.
public final class CausalLM: @unchecked Sendable {
    public let description: ModelDescription
    public var embedding: Tensor          // [vocab, hidden]
    public var layers: [DecoderLayer]
    public var norm: RMSNorm
    public var lmHead: any LinearLayer

    public init(description: ModelDescription, embedding: Tensor, layers: [DecoderLayer], norm: RMSNorm, lmHead: any LinearLayer) {
        self.description = description
        self.embedding = embedding
        self.layers = layers
        self.norm = norm
        self.lmHead = lmHead
    }

    public var vocabSize: Int { embedding.shape[0] }
    public var hiddenSize: Int { embedding.shape[1] }

    public var parameterCount: Int {
        embedding.count + layers.reduce(0) { $0 + $1.parameterCount } + norm.dim
            + (description.tieWordEmbeddings ? 0 : lmHead.parameterCount)
    }

    public var activeParameterCount: Int {
        embedding.count + norm.dim + (description.tieWordEmbeddings ? 0 : lmHead.parameterCount)
            + layers.reduce(0) { $0 + $1.inputNorm.dim + $1.attention.parameterCount + $1.postAttentionNorm.dim + $1.feedForward.activeParameterCount }
    }

    /// Embedding rows for token ids; an id outside the vocabulary is a programming error upstream
    /// (`validate(tokens:)` gives the user-facing error).
    public func embed(_ ids: [Int]) -> Tensor {
        let h = hiddenSize
        let x = Tensor(zeros: [ids.count, h])
        for (i, id) in ids.enumerated() { (x.data + i * h).update(from: embedding.data + id * h, count: h) }
        return x
    }

    public func validate(tokens: [[Int]]) throws {
        for seq in tokens {
            if let bad = seq.first(where: { $0 < 0 || $0 >= vocabSize }) {
                throw ModelError.invalidInput("token id \(bad) is outside the vocabulary (0..<\(vocabSize))")
            }
        }
    }

    /// Logits [Σ tokens, vocab] for a batch of sequences, rows in batch order. With `caches`, each
    /// sequence continues from its cache (positions start at cache.count) and the cache is extended;
    /// without, every sequence starts at position 0.
    public func forward(_ batch: [[Int]], caches: [KVCache]? = nil) -> Tensor {
        logits(hidden(batch, caches: caches))
    }

    /// Final hidden states (after the last norm) [Σ tokens, hidden].
    public func hidden(_ batch: [[Int]], caches: [KVCache]? = nil, observe: ((Int, Tensor, Tensor) -> Void)? = nil) -> Tensor {
        precondition(caches == nil || caches!.count == batch.count, "one cache per sequence")
        let caches = caches ?? batch.map { _ in KVCache(for: self) }
        let x = embed(batch.flatMap { $0 })
        var bounds: [Range<Int>] = []
        var start = 0
        for s in batch { bounds.append(start..<(start + s.count)); start += s.count }
        for (li, layer) in layers.enumerated() {
            let segments = zip(bounds, caches).map { AttentionSegment(rows: $0, cache: $1.layers[li]) }
            layer.forward(x, segments: segments, observe: observe.map { f in { f(li, $0, $1) } })
        }
        return norm(x)
    }

    public func logits(_ hidden: Tensor) -> Tensor { Profiler.measure("lm-head") { lmHead(hidden) } }

    /// Logits of selected rows of the hidden states only (e.g. the last token of each sequence), so the
    /// vocabulary projection is not paid for rows nobody reads.
    public func logits(_ hidden: Tensor, rows: [Int]) -> Tensor {
        let h = hiddenSize
        let picked = Tensor(zeros: [rows.count, h])
        for (i, r) in rows.enumerated() { (picked.data + i * h).update(from: hidden.data + r * h, count: h) }
        return logits(picked)
    }
}

public enum ModelError: Error, CustomStringConvertible, Equatable {
    case unsupportedArchitecture(String, supported: [String])
    case invalidConfig(String)
    case invalidInput(String)

    public var description: String {
        switch self {
        case .unsupportedArchitecture(let t, let s):
            return "unsupported architecture: model_type \"\(t)\" (supported: \(s.joined(separator: ", ")))"
        case .invalidConfig(let s): return "invalid config: \(s)"
        case .invalidInput(let s): return "invalid input: \(s)"
        }
    }
}
