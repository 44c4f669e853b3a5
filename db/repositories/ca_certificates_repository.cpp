#include "db/repositories/ca_certificates_repository.hpp"

#include <nlohmann/json.hpp>

#include "db/tx.hpp"

namespace otahub::db::ca_certificates {
namespace {

constexpr const char* kColumns =
    "c.id, c.org_id, c.serial, c.ski, c.aki, c.subject, c.fingerprint, iso8601(c.not_before), "
    "iso8601(c.not_after), c.description, c.active, c.check_expiration, c.jitp_product_id, "
    "jp.name, array_to_json(c.jitp_tags)::text, c.jitp_description, iso8601(c.last_used_at), "
    "iso8601(c.inserted_at), iso8601(c.updated_at)";
constexpr const char* kFrom =
    " FROM ca_certificates c LEFT JOIN products jp ON jp.id = c.jitp_product_id ";

CaCertificateRow from(const pqxx::row& row) {
    CaCertificateRow ca;
    ca.id = row[0].as<std::int64_t>();
    ca.org_id = row[1].as<std::int64_t>();
    ca.serial = row[2].as<std::string>();
    ca.ski = row[3].as<std::string>();
    ca.aki = opt_string(row[4]);
    ca.subject = row[5].as<std::string>();
    ca.fingerprint = row[6].as<std::string>();
    ca.not_before = row[7].as<std::string>();
    ca.not_after = row[8].as<std::string>();
    ca.description = row[9].as<std::string>();
    ca.active = row[10].as<bool>();
    ca.check_expiration = row[11].as<bool>();
    if (!row[12].is_null()) {
        ca.jitp = JitpProfile{row[12].as<std::int64_t>(), row[13].as<std::string>(),
                              string_array(row[14]), row[15].as<std::string>()};
    }
    ca.last_used_at = opt_string(row[16]);
    ca.inserted_at = row[17].as<std::string>();
    ca.updated_at = row[18].as<std::string>();
    return ca;
}

std::optional<CaCertificateRow> first(const pqxx::result& r) {
    if (r.empty()) return std::nullopt;
    return from(r[0]);
}

}  // namespace

CaCertificateRow create(Tx& tx, const NewCaCertificate& ca) {
    const auto id =
        tx->exec_params1(
              "INSERT INTO ca_certificates (org_id, serial, ski, aki, subject, fingerprint, "
              "not_before, not_after, der, description, jitp_product_id, jitp_tags, "
              "jitp_description) VALUES ($1, $2, $3, NULLIF($4, ''), $5, $6, to_timestamp($7), "
              "to_timestamp($8), $9, $10, NULLIF($11::bigint, 0), "
              "ARRAY(SELECT jsonb_array_elements_text($12::jsonb)), $13) RETURNING id",
              ca.org_id, ca.serial, ca.ski, ca.aki, ca.subject, ca.fingerprint,
              epoch_seconds(ca.not_before), epoch_seconds(ca.not_after),
              pqxx::binarystring(ca.der.data(), ca.der.size()), ca.description,
              ca.jitp ? ca.jitp->product_id : std::int64_t{0},
              json_array(ca.jitp ? ca.jitp->tags : std::vector<std::string>{}),
              ca.jitp ? ca.jitp->description : std::string())[0]
            .as<std::int64_t>();
    return *find_by_id(tx, id);
}

std::vector<CaCertificateRow> list(Tx& tx, std::int64_t org_id) {
    std::vector<CaCertificateRow> out;
    for (const auto& row : tx->exec_params(
             std::string("SELECT ") + kColumns + kFrom + "WHERE c.org_id = $1 ORDER BY c.id",
             org_id)) {
        out.push_back(from(row));
    }
    return out;
}

std::optional<CaCertificateRow> find(Tx& tx, std::int64_t org_id, const std::string& serial) {
    return first(tx->exec_params(
        std::string("SELECT ") + kColumns + kFrom + "WHERE c.org_id = $1 AND c.serial = $2", org_id,
        serial));
}

std::optional<CaCertificateRow> find_by_fingerprint(Tx& tx, const std::string& fingerprint) {
    return first(tx->exec_params(
        std::string("SELECT ") + kColumns + kFrom + "WHERE c.fingerprint = $1", fingerprint));
}

std::optional<CaCertificateRow> find_by_id(Tx& tx, std::int64_t id) {
    return first(
        tx->exec_params(std::string("SELECT ") + kColumns + kFrom + "WHERE c.id = $1", id));
}

CaCertificateRow update(Tx& tx, std::int64_t id, bool active, const std::string& description,
                        const std::optional<JitpProfile>& jitp) {
    tx->exec_params0(
        "UPDATE ca_certificates SET active = $2, description = $3, jitp_product_id = "
        "NULLIF($4::bigint, 0), "
        "jitp_tags = ARRAY(SELECT jsonb_array_elements_text($5::jsonb)), jitp_description = $6, "
        "updated_at = now() WHERE id = $1",
        id, active, description, jitp ? jitp->product_id : std::int64_t{0},
        json_array(jitp ? jitp->tags : std::vector<std::string>{}),
        jitp ? jitp->description : std::string());
    return *find_by_id(tx, id);
}

void remove(Tx& tx, std::int64_t id) {
    tx->exec_params0("DELETE FROM ca_certificates WHERE id = $1", id);
}

pki::TrustInputs load_trust_inputs(Tx& tx) {
    pki::TrustInputs inputs;
    for (const auto& row :
         tx->exec("SELECT id, org_id, serial, ski, active, check_expiration, "
                  "jitp_product_id IS NOT NULL, der FROM ca_certificates ORDER BY id")) {
        pki::RegisteredCa ca;
        ca.id = row[0].as<std::int64_t>();
        ca.org_id = row[1].as<std::int64_t>();
        ca.serial = row[2].as<std::string>();
        ca.ski = row[3].as<std::string>();
        ca.active = row[4].as<bool>();
        ca.check_expiration = row[5].as<bool>();
        ca.jitp = row[6].as<bool>();
        const pqxx::binarystring der{row[7]};
        ca.der.assign(der.data(), der.data() + der.size());
        inputs.cas.push_back(std::move(ca));
    }
    for (const auto& row :
         tx->exec("SELECT fingerprint FROM device_certificates WHERE revoked_at IS NOT NULL")) {
        inputs.revoked_fingerprints.push_back(row[0].as<std::string>());
    }
    // Serials listed by the imported CRL of a custom CA: refused in the handshake (a TLS
    // certificate_revoked alert), named by the CA's key identifier.
    for (const auto& row :
         tx->exec("SELECT c.ski, e.serial FROM ca_crl_entries e "
                  "JOIN ca_certificates c ON c.id = e.ca_certificate_id WHERE c.ski <> ''")) {
        inputs.revoked_serials.push_back({row[0].as<std::string>(), row[1].as<std::string>()});
    }
    return inputs;
}

}  // namespace otahub::db::ca_certificates
