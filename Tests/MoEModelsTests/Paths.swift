import Foundation

/// Where tests find their data: committed fixtures in the test bundle, and `../shared` beside the
/// repository (override with MOEPRESS_SHARED).
enum Paths {
    static var fixtures: URL { Bundle.module.url(forResource: "Fixtures", withExtension: nil)! }
    static func fixture(_ name: String) -> URL { fixtures.appendingPathComponent(name) }

    static var repository: URL {
        URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    }

    static var shared: URL {
        if let s = ProcessInfo.processInfo.environment["MOEPRESS_SHARED"] { return URL(fileURLWithPath: s) }
        return repository.deletingLastPathComponent().appendingPathComponent("shared")
    }

    static func sharedModel(_ name: String) -> URL { shared.appendingPathComponent("models").appendingPathComponent(name) }
}
