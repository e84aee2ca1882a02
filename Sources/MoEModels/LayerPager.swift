import MoECheckpoint

/// Where each decoder layer's weights lie in the checkpoint's files, and the kernel hints that let a
/// layer-major pass stream a model larger than RAM: read the next layer ahead while this one computes, and
/// (in a streaming pass) drop a finished layer's pages so they do not crowd out the ones still to come.
public final class LayerPager: @unchecked Sendable {
    public let checkpoint: Checkpoint
    /// Tensor names of each decoder layer.
    public let layerTensors: [[String]]
    /// Bytes of each layer's tensors in the files.
    public let layerBytes: [Int]
    /// Bytes of the tensors outside the decoder layers (embeddings, final norm, LM head).
    public let otherBytes: Int

    public init(checkpoint: Checkpoint, layers: Int) {
        self.checkpoint = checkpoint
        var perLayer = [[String]](repeating: [], count: layers)
        var other = 0
        for name in checkpoint.names {
            let bytes = checkpoint.info(name)?.byteCount ?? 0
            if let l = Self.layerIndex(name), l < layers { perLayer[l].append(name) } else { other += bytes }
        }
        layerTensors = perLayer
        layerBytes = perLayer.map { $0.reduce(0) { $0 + (checkpoint.info($1)?.byteCount ?? 0) } }
        otherBytes = other
    }

    /// The decoder layer a checkpoint tensor belongs to (`model.layers.<i>.…` in every supported family).
    public static func layerIndex(_ name: String) -> Int? {
        guard name.hasPrefix("model.layers.") else { return nil }
        let rest = name.dropFirst("model.layers.".count)
        guard let dot = rest.firstIndex(of: ".") else { return nil }
        return Int(rest[..<dot])
    }

    public var largestLayerBytes: Int { layerBytes.max() ?? 0 }

    public func prefetch(layer: Int) {
        guard layer >= 0, layer < layerTensors.count else { return }
        checkpoint.advise(.willNeed, tensors: layerTensors[layer])
    }

    public func evict(layer: Int) {
        guard layer >= 0, layer < layerTensors.count else { return }
        checkpoint.advise(.evict, tensors: layerTensors[layer])
    }
}
