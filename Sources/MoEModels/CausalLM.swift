import MoETensor

/// Pre-norm decoder layer: x += attn(norm(x)); x += ffn(norm(x)).
public struct DecoderLayer: Sendable {
    public var inputNorm: Norm
    public var attention: any AttentionLayer
    public var postAttentionNorm: Norm
    public var feedForward: FeedForward

    public init(inputNorm: Norm, attention: any AttentionLayer, postAttentionNorm: Norm, feedForward: FeedForward) {
        self.inputNorm = inputNorm
        self.attention = attention
        self.postAttentionNorm = postAttentionNorm
        self.feedForward = feedForward
    }

    public var parameterCount: Int {
        inputNorm.dim + attention.parameterCount + postAttentionNorm.dim + feedForward.parameterCount
    }

    /// Runs the layer in place on the residual stream `x`. `observer`, when given, sees what calibration
    /// records while the layer computes it (nothing is computed twice).
    public func forward(_ x: Tensor, segments: [AttentionSegment], observer: LayerObserver? = nil) {
        let a = Profiler.measure("attention") { attention.forward(inputNorm(x), segments: segments) }
        x.add(a)
        let h = postAttentionNorm(x)
        let f = Profiler.measure("feed-forward") { feedForward(h, observer: observer) }
        observer?.feedForward?(h, f)
        x.add(f)
    }
}

/// What a decoder layer shows while it runs (rows are those of the tensor the layer was given).
public struct LayerObserver {
    /// The feed-forward input (post-attention-norm hidden states) and output.
    public var feedForward: ((_ input: Tensor, _ output: Tensor) -> Void)?
    /// An MoE block's routing decision.
    public var routing: ((Router.Decision) -> Void)?
    /// Each routed expert's tokens, routing weights and unweighted outputs, in ascending expert order.
    public var expert: ((_ expert: Int, _ tokens: [Int], _ weights: [Float], _ outputs: Tensor) -> Void)?

    public init(feedForward: ((Tensor, Tensor) -> Void)? = nil, routing: ((Router.Decision) -> Void)? = nil,
                expert: ((Int, [Int], [Float], Tensor) -> Void)? = nil) {
        self.feedForward = feedForward
        self.routing = routing
        self.expert = expert
    }
}

/// A decoder-only causal language model assembled from shared parts by a family file. Weights are views of
/// the checkpoint in its stored dtype; `pager` (set by the loader) hints the kernel which layer's pages are
/// needed next and, in a streaming pass, which are done, so a model larger than RAM streams through it.
public final class CausalLM: @unchecked Sendable {
    public let description: ModelDescription
    public var embedding: WeightMatrix   // [vocab, hidden]
    public var layers: [DecoderLayer]
    public var norm: Norm
    public var lmHead: any LinearLayer
    public var pager: LayerPager?

    public init(description: ModelDescription, embedding: WeightMatrix, layers: [DecoderLayer], norm: Norm, lmHead: any LinearLayer) {
        self.description = description
        self.embedding = embedding
        self.layers = layers
        self.norm = norm
        self.lmHead = lmHead
    }

    public var vocabSize: Int { embedding.rows }
    public var hiddenSize: Int { embedding.cols }

    public var parameterCount: Int {
        embedding.count + layers.reduce(0) { $0 + $1.parameterCount } + norm.dim
            + (description.tieWordEmbeddings ? 0 : lmHead.parameterCount)
    }

    public var activeParameterCount: Int {
        embedding.count + norm.dim + (description.tieWordEmbeddings ? 0 : lmHead.parameterCount)
            + layers.reduce(0) { $0 + $1.inputNorm.dim + $1.attention.parameterCount + $1.postAttentionNorm.dim + $1.feedForward.activeParameterCount }
    }

    /// Bytes of weights one decoded token reads (in their stored dtype): every layer's attention, norms and
    /// active experts, the final norm and the LM head (one embedding row is negligible). A decode step cannot
    /// be faster than this over the machine's memory bandwidth.
    public var activeWeightBytes: Int {
        lmHead.weightBytes + norm.dim * 4
            + layers.reduce(0) { $0 + ($1.inputNorm.dim + $1.postAttentionNorm.dim) * 4 + $1.attention.weightBytes + $1.feedForward.activeWeightBytes }
    }

    /// Embedding rows for token ids, widened to f32; an id outside the vocabulary is a programming error
    /// upstream (`validate(tokens:)` gives the user-facing error).
    public func embed(_ ids: [Int]) -> Tensor {
        let h = hiddenSize
        let x = Tensor(zeros: [ids.count, h])
        for (i, id) in ids.enumerated() { embedding.widenRow(id, into: x.data + i * h) }
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

    /// Final hidden states (after the last norm) [Σ tokens, hidden], computed layer-major: every sequence of
    /// the batch goes through layer 1, then layer 2, so each layer's weights are read once per batch. With
    /// `caches`, sequences continue from them and extend them; without, each layer's keys and values live
    /// only while that layer runs. `evict` (a streaming pass over a model larger than RAM) drops each layer's
    /// pages once it is done.
    public func hidden(_ batch: [[Int]], caches: [KVCache]? = nil, evict: Bool = false,
) -> Tensor {
        precondition(caches == nil || caches!.count == batch.count, "one cache per sequence")
        let x = embed(batch.flatMap { $0 })
        let bounds = Self.bounds(batch.map(\.count))
        forEachLayer(tokens: x.rows, evict: evict) { li, layer in
            let layerCaches = caches?.map { $0.layers[li] } ?? batch.map { _ in KVCache.Layer(for: layer.attention) }
            layer.forward(x, segments: zip(bounds, layerCaches).map { AttentionSegment(rows: $0, cache: $1) })
        }
        return norm(x)
    }

    /// A layer-major pass over sequences that share prefixes (a multiple-choice context and its choices):
    /// in each layer the prefixes run first, then every continuation attends to a copy of its prefix's keys
    /// and values, exactly as if it had been run after the prefix as one sequence. Returns the final hidden
    /// states of the prefixes [Σ prefix tokens, hidden] and of the continuations [Σ continuation tokens, hidden].
    public func hidden(prefixes: [[Int]], continuations: [(prefix: Int, ids: [Int])], evict: Bool = false) -> (prefixes: Tensor, continuations: Tensor) {
        let xp = embed(prefixes.flatMap { $0 }), xc = embed(continuations.flatMap(\.ids))
        let pb = Self.bounds(prefixes.map(\.count)), cb = Self.bounds(continuations.map(\.ids.count))
        forEachLayer(tokens: xp.rows + xc.rows, evict: evict) { _, layer in
            let caches = prefixes.map { _ in KVCache.Layer(for: layer.attention) }
            layer.forward(xp, segments: zip(pb, caches).map { AttentionSegment(rows: $0, cache: $1) })
            if !continuations.isEmpty {
                let copies = continuations.map { caches[$0.prefix].copy() }
                layer.forward(xc, segments: zip(cb, copies).map { AttentionSegment(rows: $0, cache: $1) })
            }
        }
        return (norm(xp), continuations.isEmpty ? xc : norm(xc))
    }

    /// Runs `body` on every decoder layer in order, with the page hints of a layer-major pass: the next
    /// layer read ahead (when the pass does enough work per layer to hide it, not for a decode step), and with
    /// `evict` each finished layer dropped.
    public func forEachLayer(tokens: Int, evict: Bool, from first: Int = 0, _ body: (Int, DecoderLayer) throws -> Void) rethrows {
        let hint = tokens >= 16
        guard first < layers.count else { return }
        if hint { pager?.prefetch(layer: first) }
        for li in first..<layers.count {
            if hint, li + 1 < layers.count { pager?.prefetch(layer: li + 1) }
            try body(li, layers[li])
            if evict { pager?.evict(layer: li) }
        }
    }

    /// Consecutive row ranges of sequences of these lengths.
    static func bounds(_ lengths: [Int]) -> [Range<Int>] {
        var out: [Range<Int>] = [], start = 0
        for n in lengths { out.append(start..<(start + n)); start += n }
        return out
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

    /// Logits of rows [range] of the hidden states, `block` rows at a time: `body(first row, logits [n, vocab])`.
    /// The vocabulary projection of a long batch never exists whole.
    public func forEachLogitsBlock(_ hidden: Tensor, rows range: Range<Int>, block: Int = 64, _ body: (Int, Tensor) throws -> Void) rethrows {
        var r = range.lowerBound
        while r < range.upperBound {
            let n = min(block, range.upperBound - r)
            try body(r, logits(hidden.rowSlice(r..<(r + n))))
            r += n
        }
    }
}

public enum ModelError: Error, CustomStringConvertible, Equatable {
    /// model_type, the supported ones, and the config file that named it.
    case unsupportedArchitecture(String, supported: [String], file: String = "")
    case invalidConfig(String)
    case invalidInput(String)
    /// A result (logits, a score) came out NaN or infinite.
    case nonFinite(String)

    public var description: String {
        switch self {
        case .unsupportedArchitecture(let t, let s, let file):
            return "\(file.isEmpty ? "" : "\(file): ")unsupported architecture: model_type \"\(t)\" (supported: \(s.joined(separator: ", ")))"
        case .invalidConfig(let s): return "invalid config: \(s)"
        case .invalidInput(let s): return "invalid input: \(s)"
        case .nonFinite(let s): return s
        }
    }
}

extension CausalLM {
    /// The error for a NaN or infinite result (`what`, e.g. "logits"): every weight is scanned, and the first one
    /// holding NaN/Inf is named with its file; when all are finite, the result overflowed in the arithmetic itself.
    public func nonFiniteError(_ what: String) -> any Error {
        guard let ckpt = pager?.checkpoint else { return ModelError.nonFinite("the model produced NaN or infinite \(what)") }
        do { try ckpt.requireFinite(evict: true) } catch { return error }
        return ModelError.nonFinite("\(ckpt.directory.path): the model produced NaN or infinite \(what), though every weight is finite " +
                                    "(the arithmetic overflowed: a weight or config value may be extreme)")
    }
}
