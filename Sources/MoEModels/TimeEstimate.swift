import Foundation
import MoETensor

/// A quick measurement of how fast this machine runs one of this model's layers, from which a stage's time is
/// estimated before its heavy work starts (the memory and disk estimates are computed; time has to be
/// measured). It runs the first MoE layer forward three times over a few calibration windows: the first time after
/// dropping the layer's pages (so it reads them from disk), then twice with them resident. The difference
/// is the read; the faster resident run is the compute.
public struct ForwardProbe: Sendable {
    /// Tokens of the measured forward.
    public let tokens: Int
    /// Seconds one decoder layer takes over `tokens` with its weights in memory.
    public let computeSeconds: Double
    /// Disk read speed for weights (bytes a second); nil when the read was too quick to time.
    public let readBytesPerSecond: Double?
    /// Bytes of each decoder layer's weights in the files, and of the rest (embedding, head).
    let layerBytes: [Int]
    let otherBytes: Int

    /// Measures on `windows` (token ids; enough whole windows for every expert to see a few dozen tokens, at
    /// most all of them). Call it before any weight is modified: it drops the probed layer's file pages.
    public static func measure(_ model: CausalLM, windows: [[Int]]) -> ForwardProbe {
        let li = model.description.moeLayerIndices.first ?? 0
        let layer = model.layers[li]
        var want = 256
        if let b = layer.feedForward.moe { want = max(want, 32 * b.numExperts / max(1, b.topK)) }
        var picked: [[Int]] = []
        for w in windows where picked.reduce(0, { $0 + $1.count }) < want { picked.append(w) }
        let bounds = CausalLM.bounds(picked.map(\.count))
        let ids = picked.flatMap { $0 }
        func timed() -> Double {
            let x = model.embed(ids)
            let t0 = Date()
            layer.forward(x, segments: bounds.map { AttentionSegment(rows: $0, cache: KVCache.Layer(for: layer.attention)) })
            return Date().timeIntervalSince(t0)
        }
        model.pager?.evict(layer: li)
        // The fastest of two warm runs (the first call after start-up also pays for scratch buffers and threads).
        let cold = timed(), warm = min(timed(), timed())
        let bytes = model.pager?.layerBytes[li] ?? 0
        let read = cold - warm
        return ForwardProbe(tokens: ids.count, computeSeconds: warm,
                            readBytesPerSecond: read > 0.02 && bytes > 0 ? Double(bytes) / read : nil,
                            layerBytes: model.pager?.layerBytes ?? model.layers.map { _ in 0 }, otherBytes: model.pager?.otherBytes ?? 0)
    }

    func readSeconds(_ bytes: Int) -> Double { readBytesPerSecond.map { Double(bytes) / $0 } ?? 0 }

    /// Seconds of `passes` layer-major passes of `tokens` tokens through every decoder layer, each layer's
    /// compute scaled by `computeFactor` (1 for a forward pass; a training step's forward, recomputation and
    /// backward pass cost more). Streaming, each pass reads every layer `readsPerPass` times from disk while
    /// other work computes (the slower of the two counts); otherwise the weights are read once at most (the
    /// page cache may hold them already, so this is the upper end).
    public func seconds(tokens: Int, passes: Int = 1, computeFactor: Double = 1, readsPerPass: Int = 1, streams: Bool) -> Double {
        let compute = computeSeconds / Double(max(1, self.tokens)) * Double(tokens) * computeFactor
        if streams {
            let reads = Double(readsPerPass)
            return Double(passes) * (reads * readSeconds(otherBytes) + layerBytes.reduce(0) { $0 + max(compute, reads * readSeconds($1)) })
        }
        return Double(passes * layerBytes.count) * compute + readSeconds(otherBytes + layerBytes.reduce(0, +))
    }

    /// Bytes of the checkpoint's weights (what a pass streams).
    public var modelBytes: Int { otherBytes + layerBytes.reduce(0, +) }

    /// "probe: N tokens through one layer in s s, weights read at R MB/s", for the estimate line.
    public var summary: String {
        String(format: "probe: %d tokens through one layer in %.2f s%@", tokens, computeSeconds,
               readBytesPerSecond.map { String(format: ", weights read at %.0f MB/s", $0 / 1e6) } ?? "")
    }
}
