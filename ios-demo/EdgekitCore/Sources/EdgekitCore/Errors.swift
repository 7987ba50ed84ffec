import Foundation

/// A problem with what the app was given (a manifest, a prompt, an image size), said in one
/// line: what failed, the value received, what is allowed, and a hint. The app shows
/// `description`; nothing here prints.
public struct EdgekitCoreError: Error, LocalizedError, CustomStringConvertible, Equatable {
    public let message: String
    public let hint: String

    public init(_ message: String, hint: String) {
        self.message = message
        self.hint = hint
    }

    public var description: String { "\(message) Hint: \(hint)" }
    public var errorDescription: String? { description }
}
