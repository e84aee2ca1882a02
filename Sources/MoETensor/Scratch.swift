import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// Working memory backed by a file instead of anonymous memory: an f32 tensor too large for the memory
/// budget (a fitness cache of every expert's outputs) lives in a shared mapping of a temporary file that is
/// unlinked as soon as it is created, so the kernel pages it to disk under pressure, it never counts as
/// anonymous memory, and nothing is left behind whatever way the process ends.
public final class ScratchFile: @unchecked Sendable {
    public let bytes: Int
    let base: UnsafeMutableRawPointer

    /// `directory`: where the file is made (default $TMPDIR or /tmp).
    public init(bytes: Int, directory: String? = nil) throws {
        let dir = directory ?? ProcessInfo.processInfo.environment["TMPDIR"] ?? "/tmp"
        var template = Array("\(dir)/moepress-scratch-XXXXXX".utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { mkstemp($0.baseAddress!) }
        guard fd >= 0 else { throw ScratchError("cannot create a scratch file in \(dir) (\(String(cString: strerror(errno))))") }
        template.withUnsafeBufferPointer { _ = unlink($0.baseAddress!) }
        defer { close(fd) }
        self.bytes = max(bytes, 1)
        guard ftruncate(fd, off_t(self.bytes)) == 0, let p = mmap(nil, self.bytes, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0), p != MAP_FAILED else {
            throw ScratchError("cannot map \(formatBytes(bytes)) of scratch space in \(dir) (\(String(cString: strerror(errno))))")
        }
        base = p
    }

    deinit { munmap(base, bytes) }

    /// An f32 tensor over the file's bytes from `byteOffset` (zero-filled, as a new file is).
    public func tensor(_ shape: [Int], byteOffset: Int = 0) -> Tensor {
        let n = shape.reduce(1, *)
        precondition(byteOffset % 64 == 0 && byteOffset + n * 4 <= bytes, "scratch tensor out of range")
        return Tensor(viewing: (base + byteOffset).bindMemory(to: Float.self, capacity: max(n, 1)), shape: shape, owner: self)
    }

    /// A zero-filled tensor in anonymous memory when it takes at most `inMemory` bytes, else in a scratch file.
    public static func tensor(_ shape: [Int], inMemory: Int, directory: String? = nil) throws -> (Tensor, spilled: Bool) {
        let n = shape.reduce(1, *) * 4
        if n <= inMemory { return (Tensor(zeros: shape), false) }
        return (try ScratchFile(bytes: n, directory: directory).tensor(shape), true)
    }
}

public struct ScratchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ d: String) { description = d }
}
