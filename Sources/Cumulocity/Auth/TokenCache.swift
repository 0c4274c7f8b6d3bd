/// A bearer token kept until it is due for renewal, fetched by one request at a time however many
/// callers ask meanwhile (single flight). The device access token and OAuth2 tokens both use it.
actor TokenCache {
    struct Token: Sendable {
        let value: String
        /// From then on a caller fetches a new one.
        let refreshAt: ContinuousClock.Instant
        /// Until then the token may still be used when a renewal fails.
        let expiresAt: ContinuousClock.Instant
    }

    private(set) var token: Token?
    private var fetching: Task<Result<Token, PlatformError>, Never>?

    /// The current token when it is not due for renewal, else a new one from `obtain` (shared with
    /// every caller that asks while it runs). Whichever caller resumes first stores the result, so no
    /// caller can see a finished fetch whose token is not stored yet.
    func current(orFetch obtain: @escaping @Sendable () async -> Result<Token, PlatformError>,
                 fetched: @Sendable (Token) -> Void = { _ in }) async -> Result<Token, PlatformError> {
        if let token, ContinuousClock.now < token.refreshAt { return .success(token) }
        return await fetch(obtain, fetched: fetched)
    }

    /// A new token, whatever the current one: one fetch at a time.
    func fetch(_ obtain: @escaping @Sendable () async -> Result<Token, PlatformError>,
               fetched: @Sendable (Token) -> Void = { _ in }) async -> Result<Token, PlatformError> {
        let task: Task<Result<Token, PlatformError>, Never>
        if let fetching {
            task = fetching
        } else {
            task = Task { await obtain() }
            fetching = task
        }
        let result = await task.value
        guard fetching == task else { return result }
        fetching = nil
        if case .success(let fresh) = result {
            token = fresh
            fetched(fresh)
        }
        return result
    }

    /// Forgets the token if `value` is still the current one (it was refused); whether it was.
    @discardableResult
    func invalidate(_ value: String) -> Bool {
        guard token?.value == value else { return false }
        token = nil
        return true
    }

    /// Forgets the token, whatever it is; the one forgotten.
    @discardableResult
    func forget() -> Token? {
        defer { token = nil }
        return token
    }
}
