import Foundation
import Testing
@testable import MoETokenizer

/// Expected ids from HF `tokenizers` (tools/oracle/make_tokenizer_fixtures.py).
struct TokenizerFixture: Decodable {
    struct FileEntry: Decodable {
        let bytes: Int
        let tokens: Int
        let hash: String
        let lines: Int
        let line_tokens: Int
        let line_blocks: [String]
    }
    struct Adversarial: Decodable {
        let text: String
        let ids: [Int]
        let ids_special: [Int]
        let decoded: String
        let decoded_skip: String
    }
    struct Entry: Decodable {
        let path: String
        let files: [String: FileEntry]
        let adversarial: [Adversarial]
    }
    let tokenizers_version: String
    let block_lines: Int
    let tokenizers: [String: Entry]

    static let shared: TokenizerFixture = {
        let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("tokenizers.json")
        return try! JSONDecoder().decode(TokenizerFixture.self, from: Data(contentsOf: url))
    }()

    static var sharedDir: URL {
        if let s = ProcessInfo.processInfo.environment["MOEPRESS_SHARED"] { return URL(fileURLWithPath: s) }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared")
    }

    static let names = ["mixtral-ref", "qwen-moe-ref", "mixtral-8x7b", "tekken-240911"]

    nonisolated(unsafe) static var loaded: [String: Tokenizer] = [:]
    static let lock = NSLock()
    static func tokenizer(_ name: String) throws -> Tokenizer {
        lock.lock()
        defer { lock.unlock() }
        if let t = loaded[name] { return t }
        let t = try Tokenizer(contentsOf: sharedDir.appendingPathComponent(shared.tokenizers[name]!.path))
        loaded[name] = t
        return t
    }
}

/// FNV-1a 64 over ids as little-endian u32, as the oracle computes it.
func fnv(_ ids: [Int], _ start: UInt64 = 0xCBF2_9CE4_8422_2325) -> UInt64 {
    var h = start
    for i in ids {
        var v = UInt32(truncatingIfNeeded: i)
        for _ in 0..<4 {
            h = (h ^ UInt64(v & 0xFF)) &* 0x100_0000_01B3
            v >>= 8
        }
    }
    return h
}

func hex(_ h: UInt64) -> String {
    let s = String(h, radix: 16)
    return String(repeating: "0", count: 16 - s.count) + s
}

@Suite(.serialized) struct TokenizerParityTests {
    @Test(arguments: TokenizerFixture.names)
    func devFilesWhole(_ name: String) throws {
        let tok = try TokenizerFixture.tokenizer(name)
        let entry = TokenizerFixture.shared.tokenizers[name]!
        #expect(entry.files.count == 11)
        for (file, want) in entry.files.sorted(by: { $0.key < $1.key }) {
            let text = try String(contentsOf: TokenizerFixture.sharedDir.appendingPathComponent("data/dev/\(file)"), encoding: .utf8)
            #expect(text.utf8.count == want.bytes, "\(file) changed since the fixture was made")
            let ids = try tok.encode(text)
            #expect(ids.count == want.tokens, "\(name) \(file): \(ids.count) tokens, HF \(want.tokens)")
            #expect(hex(fnv(ids)) == want.hash, "\(name) \(file): ids differ from HF")
        }
    }

    @Test(arguments: TokenizerFixture.names)
    func devFilesLineByLine(_ name: String) throws {
        let tok = try TokenizerFixture.tokenizer(name)
        let entry = TokenizerFixture.shared.tokenizers[name]!
        let block = TokenizerFixture.shared.block_lines
        for (file, want) in entry.files.sorted(by: { $0.key < $1.key }) {
            let text = try String(contentsOf: TokenizerFixture.sharedDir.appendingPathComponent("data/dev/\(file)"), encoding: .utf8)
            let lines = text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init)
            #expect(lines.count == want.lines)
            var total = 0
            for (b, start) in stride(from: 0, to: lines.count, by: block).enumerated() {
                var h: UInt64 = 0xCBF2_9CE4_8422_2325
                for line in lines[start..<min(start + block, lines.count)] {
                    let ids = try tok.encode(line)
                    total += ids.count
                    h = fnv(ids + [Int(UInt32.max)], h)
                }
                #expect(hex(h) == want.line_blocks[b], "\(name) \(file): lines \(start)..<\(start + block) differ from HF")
            }
            #expect(total == want.line_tokens, "\(name) \(file)")
        }
    }

    @Test(arguments: TokenizerFixture.names)
    func adversarialInputs(_ name: String) throws {
        let tok = try TokenizerFixture.tokenizer(name)
        for a in TokenizerFixture.shared.tokenizers[name]!.adversarial {
            #expect(try tok.encode(a.text) == a.ids, "\(name): encode(\(a.text.debugDescription))")
            #expect(try tok.encode(a.text, addSpecialTokens: true) == a.ids_special, "\(name): encode special (\(a.text.debugDescription))")
            #expect(try tok.decode(a.ids) == a.decoded, "\(name): decode(\(a.text.debugDescription))")
            #expect(try tok.decode(a.ids, skipSpecialTokens: true) == a.decoded_skip, "\(name): decode skip (\(a.text.debugDescription))")
            // Round trip wherever HF round-trips.
            if a.decoded == a.text { #expect(try tok.decode(tok.encode(a.text)) == a.text) }
        }
    }
}

/// Added tokens with lstrip / rstrip / single_word / normalized, added by HF to two real tokenizers
/// (tools/oracle/make_added_token_fixtures.py), one of them with a Lowercase normalizer.
@Suite struct AddedTokenFlagTests {
    struct Case: Decodable { let text: String; let ids: [Int]; let decoded: String }

    @Test(arguments: ["metaspace", "bytelevel"])
    func flagsMatchHF(_ name: String) throws {
        let dir = Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent("added_tokens")
        let tok = try Tokenizer(contentsOf: dir.appendingPathComponent("\(name).json"))
        let cases = try JSONDecoder().decode([String: [Case]].self, from: Data(contentsOf: dir.appendingPathComponent("expected.json")))[name]!
        for c in cases {
            #expect(try tok.encode(c.text) == c.ids, "\(name): \(c.text.debugDescription)")
            #expect(try tok.decode(c.ids, skipSpecialTokens: true) == c.decoded, "\(name) decode: \(c.text.debugDescription)")
        }
    }
}
