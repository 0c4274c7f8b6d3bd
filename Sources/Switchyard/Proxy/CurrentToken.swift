import Cumulocity
import JSONSupport
import Logging

/// `switchyard token`: a currently valid device access token for scripts.
///
/// Asks the running agent through its plugin proxy (the URL and secret are in the state directory,
/// readable only by the agent's user); when no agent runs, obtains one with the device certificate.
public func currentToken(configuration: AgentConfiguration, logger: Logger) async throws -> String {
    let transport = try CurlTransport(tls: configuration.tls)
    defer { transport.shutdown() }
    let file = configuration.stateDir + "/" + PluginProxy.file
    if FileSystem.exists(file) {
        let text: String
        do throws(AgentConfiguration.Problem) {
            text = try AgentConfiguration.readSecret(file)
        } catch {
            throw TokenError(detail: "the running agent's proxy record: \(error.detail)")
        }
        if let json = try? JSONValue.parse(text), let url = json["url"]?.stringValue, let secret = json["secret"]?.stringValue {
            let base = url.hasSuffix("/c8y") ? String(url.dropLast(4)) : url
            do {
                let response = try await transport.send(HTTPRequest(method: "GET", url: base + "/token",
                                                                     headers: [(PluginProxy.secretHeader, secret)], timeout: .seconds(30)))
                let body = String(decoding: response.body, as: UTF8.self)
                guard response.status == 200 else { throw TokenError(detail: body.trimmingCharacters(in: "\n ")) }
                return body
            } catch let error as TransportError {
                logger.debug("the agent's proxy does not answer; asking the tenant directly", metadata: ["error": "\(error)"])
            }
        }
    }
    guard case .certificate(let settings) = configuration.auth.mode else {
        throw TokenError(detail: "auth.mode is not certificate: the agent authenticates with a password and has no token; plugins use the proxy")
    }
    let provider = DeviceTokenProvider(settings: settings.tokenSettings(tenantURL: configuration.c8y.url),
                                       transport: transport, logger: logger)
    return String(try await provider.authorization().dropFirst(7))
}

struct TokenError: Error, CustomStringConvertible {
    let detail: String
    var description: String { detail }
}
