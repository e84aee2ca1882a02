import Foundation
import MoETokenizer

enum MoETokenizerShim {
    static func tokenizer(_ model: URL) throws -> Tokenizer { try Tokenizer(modelDirectory: model) }
}
