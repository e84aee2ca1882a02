import MoETensor

/// What a model is, read from config.json alone (no weights): the family-neutral facts that
/// `inspect` reports and that methods consult (dense first layers, shared experts, routing semantics).
public struct ModelDescription: Sendable, Codable, Equatable {
    public enum AttentionKind: String, Sendable, Codable { case groupedQuery = "gqa", latent = "mla" }

    public struct Layer: Sendable, Codable, Equatable {
        /// nil for a dense layer.
        public var experts: Int?
        public var expertIntermediate: Int
        public var denseIntermediate: Int?
        public var sharedExpertIntermediate: Int?
        public var sharedExpertGated: Bool
        public var isMoE: Bool { experts != nil }
    }

    public var modelType: String
    public var architecture: String
    public var vocabSize: Int
    public var hiddenSize: Int
    public var heads: Int
    public var kvHeads: Int
    public var headDim: Int
    public var attention: AttentionKind
    public var maxPositions: Int
    public var tieWordEmbeddings: Bool
    public var activation: Activation
    public var rmsNormEps: Float
    public var routing: Routing?
    public var layers: [Layer]
    public var bosTokenIDs: [Int]
    public var eosTokenIDs: [Int]
    /// Decoder and final norms are LayerNorm with a bias (Phi-MoE) rather than RMSNorm.
    public var layerNorm = false

    public var numLayers: Int { layers.count }
    public var moeLayerIndices: [Int] { layers.indices.filter { layers[$0].isMoE } }
    public var denseLayerIndices: [Int] { layers.indices.filter { !layers[$0].isMoE } }
}
