import Cumulocity
import JSONSupport
import Logging

/// Seed step 0: obtains the device user's credentials with the bootstrap credentials, once.
///
/// The device asks `POST /devicecontrol/deviceCredentials` with its external id until an operator
/// accepts it (404 meanwhile, logged once a minute); a 401 means the bootstrap credentials are wrong
/// and is retried slowly. The answer is stored in `credentials.json` (mode 0600, written atomically)
/// and used from then on, as `<tenantId>/<username>`; a later start reads it and does not bootstrap again.
struct Bootstrap {
    let baseURL: String
    let transport: CurlTransport
    let bootstrap: BasicCredentials
    let externalId: String
    let interval: Duration
    let stateDirectory: String
    let logger: Logger

    var file: String { stateDirectory + "/credentials.json" }

    /// The stored credentials, or `nil` when there are none yet.
    /// - Throws: ``BootstrapError`` for a credentials file others can read, or one that is damaged.
    func stored() throws(BootstrapError) -> BasicCredentials? {
        guard FileSystem.exists(file) else { return nil }
        let text: String
        do throws(AgentConfiguration.Problem) {
            text = try AgentConfiguration.readSecret(file)
        } catch {
            throw BootstrapError("stored device credentials: \(error.detail)")
        }
        guard let json = try? JSONValue.parse(text), let tenant = json["tenantId"]?.stringValue,
              let username = json["username"]?.stringValue, let password = json["password"]?.stringValue else {
            throw BootstrapError("\(file) is damaged; remove it to bootstrap the device again")
        }
        return BasicCredentials(tenant: tenant, username: username, password: password)
    }

    /// Asks until the device is accepted (or the task is cancelled: `nil`).
    func obtain() async throws(BootstrapError) -> BasicCredentials? {
        if let credentials = try stored() { return credentials }
        let client = PlatformClient(baseURL: baseURL, transport: transport, credentials: bootstrap)
        let mediaType = "application/vnd.com.nsn.cumulocity.devicecredentials+json"
        var lastNotice = ContinuousClock.now - .seconds(61)
        var refusals = 0
        while !Task.isCancelled {
            var delay = interval
            let answer: (status: Int, json: JSONValue?)
            do throws(PlatformError) {
                answer = try await client.send("POST", "/devicecontrol/deviceCredentials",
                                               body: ["id": .string(externalId)], accept: mediaType, accepting: [404])
            } catch where error.status == 401 {
                // Backed off to a ceiling of 5 minutes; logged at each step, then every 10th refusal.
                refusals += 1
                let backoff = Backoff(initial: max(interval, .seconds(30)), maximum: .seconds(300))
                let pause = backoff.base(attempt: refusals)
                if backoff.isLogged(attempt: refusals) {
                    logger.error("the bootstrap credentials were refused (401); check auth.bootstrap.* (switchyard config check)",
                                 metadata: ["user": "\(bootstrap.user)", "refusals": "\(refusals)", "retryIn": "\(pause.readable)",
                                            "backoffCeiling": "\(backoff.maximum.readable)"])
                }
                do { try await Task.sleep(for: pause) } catch { return nil }
                continue
            } catch where error.isCancellation {
                return nil
            } catch {
                logger.warning("cannot ask for device credentials; retrying", metadata: ["error": "\(error)"])
                do { try await Task.sleep(for: delay) } catch { return nil }
                continue
            }
            if answer.status == 404 {
                if ContinuousClock.now - lastNotice > .seconds(60) {
                    logger.notice("waiting for the device to be accepted in the tenant's device registration",
                                  metadata: ["externalId": "\(externalId)"])
                    lastNotice = .now
                }
            } else if let tenant = answer.json?["tenantId"]?.stringValue, let username = answer.json?["username"]?.stringValue,
                      let password = answer.json?["password"]?.stringValue {
                let record: JSONValue = ["tenantId": .string(tenant), "username": .string(username), "password": .string(password)]
                do {
                    try FileSystem.writeAtomically(file, record.encoded(), mode: 0o600)
                } catch {
                    throw BootstrapError("cannot store the device credentials: \(error)")
                }
                logger.notice("device accepted; credentials stored", metadata: ["user": "\(tenant)/\(username)", "file": "\(file)"])
                return BasicCredentials(tenant: tenant, username: username, password: password)
            } else {
                logger.error("device credentials answer lacks tenantId, username or password; asking again")
                delay = interval
            }
            do { try await Task.sleep(for: delay) } catch { return nil }
        }
        return nil
    }
}

/// Bootstrap cannot go on: the stored credentials are unusable, or new ones cannot be stored.
struct BootstrapError: Error, CustomStringConvertible {
    let detail: String
    init(_ detail: String) { self.detail = detail }
    var description: String { detail }
}
