# Unified companies list → Finch company: the first (only) company of the account.
.results[0] | {
  id: .remote_id,
  legal_name: .legal_name,
  ein: (.eins[0] // null),
  locations: [.locations[]? | {line1: .street_1, city: .city, postal_code: .zip_code, country: .country}]
}
