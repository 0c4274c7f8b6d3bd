/// The platform's media types (`application/vnd.com.nsn.cumulocity.<name>+json`).
public enum MediaType {
    public static let json = "application/json"
    public static let managedObject = vnd("managedobject")
    public static let externalId = vnd("externalid")
    public static let externalIdCollection = vnd("externalidcollection")
    public static let operation = vnd("operation")
    public static let operationCollection = vnd("operationcollection")
    public static let measurement = vnd("measurement")
    public static let event = vnd("event")
    public static let alarm = vnd("alarm")
    public static let alarmCollection = vnd("alarmcollection")
    public static let managedObjectReference = vnd("managedobjectreference")

    static func vnd(_ name: String) -> String { "application/vnd.com.nsn.cumulocity.\(name)+json" }
}

/// Percent-encodes one path segment or query value (RFC 3986 unreserved characters pass).
public func percentEncoded(_ text: String) -> String {
    var out = ""
    for byte in text.utf8 {
        switch byte {
        case UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "a")...UInt8(ascii: "z"),
             UInt8(ascii: "0")...UInt8(ascii: "9"), UInt8(ascii: "-"), UInt8(ascii: "."),
             UInt8(ascii: "_"), UInt8(ascii: "~"):
            out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = Array("0123456789ABCDEF".unicodeScalars)
            out.unicodeScalars.append("%")
            out.unicodeScalars.append(hex[Int(byte >> 4)])
            out.unicodeScalars.append(hex[Int(byte & 0xF)])
        }
    }
    return out
}
