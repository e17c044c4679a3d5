"""The vocabulary the sandbox's catalog is made of: data sources, themes of similar columns, tags.

Pure data, no logic: which sources exist (relational, warehouse, object store, SaaS, NoSQL) with
their schemas, tables and type names; which *themes* clusters are made of (email, ssn, phone…), with
the column-name variants BigID's similarity engine groups together, the PII attribute they carry and
the labels such a cluster gets; and the awkward values real catalogs hold. :mod:`auditor.sandbox.data`
combines them deterministically.

Column-name variants are disjoint across themes, and sources get a distinct suffix per cluster
instance, so that a ``fullyQualifiedName`` belongs to exactly one cluster (until drift moves it).
"""

from __future__ import annotations

from typing import NamedTuple


class Source(NamedTuple):
    name: str
    family: str  # rdb, dwh, obj, saas, nosql
    schemas: tuple[str, ...]
    tables: tuple[str, ...]
    dialect: str = ""  # key into DATA_TYPES when the family's type names do not fit

    @property
    def types(self) -> dict[str, str]:
        return DATA_TYPES[self.dialect or self.family]


class Theme(NamedTuple):
    key: str
    names: tuple[str, ...]  # cluster display names
    variants: tuple[str, ...]  # column names grouped into such a cluster
    attribute: str | None  # the PII attribute BigID finds in it
    secondary: str | None  # an attribute that often co-occurs
    pii: bool
    logical: str  # str, int, date, ts, num, bool
    labels: tuple[str, ...]  # labels besides PII/Confidential
    business: str | None
    pk: bool  # a key column: often the primary key
    sources: tuple[str, ...]


_RDB_TABLES = (
    "customers",
    "users",
    "contacts",
    "employees",
    "orders",
    "payments",
    "invoices",
    "accounts",
    "leads",
    "patients",
    "shipments",
    "subscriptions",
    "audit_log",
    "applicants",
)
_DWH_TABLES = (*tuple(t.upper() for t in _RDB_TABLES[:10]), "DIM_CUSTOMER", "FACT_SALES", "STG_EVENTS")
_OBJ_TABLES = (
    "exports/customers.csv",
    "landing/crm/contacts.parquet",
    "raw/payments/2024/part-00000.snappy.parquet",
    "raw/hr/employees.json",
    "curated/orders/orders.parquet",
    "archive/2019/users_backup.csv",
    "tmp/analysis (copy).xlsx",
)

SOURCES: dict[str, Source] = {
    s.name: s
    for s in (
        Source("pg-crm", "rdb", ("public", "crm", "sales"), _RDB_TABLES),
        Source("mysql-billing", "rdb", ("billing", "finance"), _RDB_TABLES),
        Source("oracle-erp", "rdb", ("HR", "FIN", "APPS"), tuple(t.upper() for t in _RDB_TABLES)),
        Source("mssql-hr", "rdb", ("dbo", "payroll"), _RDB_TABLES),
        Source("snowflake-dw", "dwh", ("PUBLIC", "ANALYTICS", "STAGING"), _DWH_TABLES),
        Source("bigquery-analytics", "dwh", ("marketing", "product", "finance"), _RDB_TABLES, "bigquery"),
        Source("redshift-mart", "dwh", ("mart", "reporting"), _RDB_TABLES),
        Source("s3-datalake", "obj", ("datalake-raw", "datalake-curated"), _OBJ_TABLES),
        Source("gcs-archive", "obj", ("archive-eu",), _OBJ_TABLES),
        Source("azure-blob-exports", "obj", ("exports",), _OBJ_TABLES),
        Source("salesforce", "saas", ("salesforce",), ("Account", "Contact", "Lead", "Opportunity", "Case")),
        Source("workday", "saas", ("workday",), ("Worker", "Position", "Compensation", "Applicant")),
        Source("zendesk", "saas", ("zendesk",), ("tickets", "users", "organizations")),
        Source("hubspot", "saas", ("hubspot",), ("contacts", "companies", "deals")),
        Source("mongodb-app", "nosql", ("app", "events"), ("users", "orders", "sessions", "profiles")),
    )
}

# Type names per source family and logical type.
DATA_TYPES: dict[str, dict[str, str]] = {
    "rdb": {
        "str": "varchar",
        "int": "integer",
        "date": "date",
        "ts": "timestamp",
        "num": "numeric",
        "bool": "boolean",
    },
    "dwh": {
        "str": "VARCHAR(16777216)",
        "int": "NUMBER(38,0)",
        "date": "DATE",
        "ts": "TIMESTAMP_NTZ",
        "num": "NUMBER(18,2)",
        "bool": "BOOLEAN",
    },
    "bigquery": {
        "str": "STRING",
        "int": "INT64",
        "date": "DATE",
        "ts": "TIMESTAMP",
        "num": "NUMERIC",
        "bool": "BOOL",
    },
    "obj": {
        "str": "string",
        "int": "int64",
        "date": "date32",
        "ts": "timestamp[ms]",
        "num": "double",
        "bool": "bool",
    },
    "saas": {
        "str": "string",
        "int": "id",
        "date": "date",
        "ts": "datetime",
        "num": "currency",
        "bool": "boolean",
    },
    "nosql": {
        "str": "String",
        "int": "Int64",
        "date": "Date",
        "ts": "Date",
        "num": "Double",
        "bool": "Boolean",
    },
}

_PEOPLE = ("pg-crm", "salesforce", "hubspot", "zendesk", "snowflake-dw", "s3-datalake", "mongodb-app")
_HR = ("mssql-hr", "workday", "oracle-erp", "snowflake-dw", "s3-datalake", "gcs-archive")
_MONEY = ("mysql-billing", "oracle-erp", "snowflake-dw", "redshift-mart", "s3-datalake", "azure-blob-exports")
_PRODUCT = ("pg-crm", "mongodb-app", "bigquery-analytics", "redshift-mart", "snowflake-dw", "s3-datalake")

THEMES: tuple[Theme, ...] = (
    Theme(
        "email",
        ("Customer Email", "Contact Emails", "User E-mail Addresses"),
        (
            "email",
            "email_address",
            "contact_email",
            "user_email",
            "EMAIL_ADDR",
            "e_mail",
            "EmailAddress",
            "primary_email",
        ),
        "Email",
        "Person Name",
        True,
        "str",
        ("Contact",),
        "Email Address",
        False,
        _PEOPLE,
    ),
    Theme(
        "ssn",
        ("Sensitive HR Data", "Social Security Numbers", "National IDs"),
        ("ssn", "social_security_number", "SSN", "ssn_last4", "tax_id", "national_id", "SOC_SEC_NO"),
        "SSN",
        "Date of Birth",
        True,
        "str",
        ("HR",),
        "Social Security Number",
        False,
        _HR,
    ),
    Theme(
        "phone",
        ("Phone Numbers", "Contact Phones"),
        ("phone", "phone_number", "mobile", "PHONE_NO", "contact_phone", "cell_phone", "tel", "MobilePhone"),
        "Phone",
        None,
        True,
        "str",
        ("Contact",),
        "Phone Number",
        False,
        _PEOPLE,
    ),
    Theme(
        "credit_card",
        ("Payment Cards", "Credit Card Numbers"),
        ("credit_card", "cc_number", "card_number", "pan", "CARD_NO", "payment_card", "cc_num"),
        "Credit Card",
        "CVV",
        True,
        "str",
        ("Financial", "PCI"),
        "Card Number",
        False,
        _MONEY,
    ),
    Theme(
        "first_name",
        ("First Names", "Given Names"),
        ("first_name", "firstname", "given_name", "FIRST_NM", "fname", "FirstName"),
        "First Name",
        "Person Name",
        True,
        "str",
        ("Contact",),
        "First Name",
        False,
        _PEOPLE,
    ),
    Theme(
        "last_name",
        ("Last Names", "Surnames"),
        ("last_name", "lastname", "surname", "family_name", "LAST_NM", "LastName"),
        "Last Name",
        "Person Name",
        True,
        "str",
        ("Contact",),
        "Last Name",
        False,
        _PEOPLE,
    ),
    Theme(
        "dob",
        ("Birth Dates",),
        ("date_of_birth", "birth_date", "dob", "BIRTHDATE", "birthday"),
        "Date of Birth",
        None,
        True,
        "date",
        ("HR",),
        "Date of Birth",
        False,
        _HR,
    ),
    Theme(
        "address",
        ("Postal Addresses", "Street Addresses"),
        ("street_address", "address_line1", "addr1", "mailing_address", "BillingStreet", "home_address"),
        "Address",
        None,
        True,
        "str",
        ("Contact",),
        "Street Address",
        False,
        _PEOPLE,
    ),
    Theme(
        "zip",
        ("Postal Codes",),
        ("zip_code", "postal_code", "zip", "postcode", "BillingPostalCode"),
        "Zip Code",
        None,
        True,
        "str",
        ("Contact",),
        "Postal Code",
        False,
        _PEOPLE,
    ),
    Theme(
        "ip_address",
        ("IP Addresses", "Client IPs"),
        ("ip_address", "client_ip", "src_ip", "remote_addr", "last_login_ip"),
        "IP Address",
        None,
        True,
        "str",
        ("Security",),
        "IP Address",
        False,
        _PRODUCT,
    ),
    Theme(
        "iban",
        ("Bank Accounts", "IBANs"),
        ("iban", "bank_account", "account_number", "acct_no", "routing_number"),
        "IBAN",
        "Bank Account Number",
        True,
        "str",
        ("Financial",),
        "Bank Account",
        False,
        _MONEY,
    ),
    Theme(
        "passport",
        ("Passport Numbers",),
        ("passport_number", "passport_no", "travel_document_id"),
        "Passport Number",
        None,
        True,
        "str",
        ("HR",),
        "Passport Number",
        False,
        _HR,
    ),
    Theme(
        "drivers_license",
        ("Driver Licenses",),
        ("drivers_license", "driver_license_no", "dl_number", "license_id"),
        "Driver License",
        None,
        True,
        "str",
        ("HR",),
        "Driver License",
        False,
        _HR,
    ),
    Theme(
        "salary",
        ("Compensation", "Salaries"),
        ("salary", "annual_salary", "base_pay", "compensation", "BONUS_AMT", "hourly_rate"),
        "Salary",
        None,
        True,
        "num",
        ("HR", "Financial"),
        "Salary",
        False,
        _HR,
    ),
    Theme(
        "medical",
        ("Patient Records", "Medical Record Numbers"),
        ("mrn", "medical_record_number", "patient_mrn", "health_plan_id", "diagnosis_code", "icd10_code"),
        "Medical Record Number",
        "Diagnosis",
        True,
        "str",
        ("Health", "PHI"),
        "Medical Record",
        False,
        ("pg-crm", "oracle-erp", "s3-datalake", "snowflake-dw", "gcs-archive"),
    ),
    Theme(
        "username",
        ("User Logins", "Usernames"),
        ("username", "login", "user_name", "login_name", "handle"),
        "Username",
        None,
        True,
        "str",
        ("Security",),
        "Username",
        False,
        _PRODUCT,
    ),
    Theme(
        "password",
        ("Credentials",),
        ("password_hash", "pwd_hash", "passwd", "secret_answer", "api_secret"),
        "Password",
        None,
        True,
        "str",
        ("Security",),
        "Password Hash",
        False,
        _PRODUCT,
    ),
    Theme(
        "gender",
        ("Gender",),
        ("gender", "sex", "gender_code"),
        "Gender",
        None,
        True,
        "str",
        ("HR",),
        "Gender",
        False,
        _HR,
    ),
    Theme(
        "customer_id",
        ("Customer Keys", "Customer Identifiers"),
        ("customer_id", "cust_id", "CUSTOMER_KEY", "client_id", "AccountId", "customer_number"),
        "Customer ID",
        None,
        True,
        "int",
        ("Identifier",),
        "Customer Identifier",
        True,
        _PEOPLE,
    ),
    Theme(
        "employee_id",
        ("Employee Identifiers",),
        ("employee_id", "emp_id", "EMPLOYEE_NUMBER", "worker_id", "staff_no"),
        "Employee ID",
        None,
        True,
        "int",
        ("HR", "Identifier"),
        "Employee Identifier",
        True,
        _HR,
    ),
    Theme(
        "order_id",
        ("Order Keys",),
        ("order_id", "order_no", "ORDER_KEY", "purchase_id", "OrderNumber"),
        None,
        None,
        False,
        "int",
        ("Operational",),
        "Order Number",
        True,
        _PRODUCT,
    ),
    Theme(
        "sku",
        ("Product Codes",),
        ("sku", "product_sku", "item_code", "product_code", "upc"),
        None,
        None,
        False,
        "str",
        ("Operational",),
        None,
        False,
        _PRODUCT,
    ),
    Theme(
        "created_at",
        ("Creation Timestamps", "Record Timestamps"),
        ("created_at", "created_ts", "insert_date", "CREATED_DATE", "creation_time", "CreatedDate"),
        None,
        None,
        False,
        "ts",
        ("Operational",),
        "Created At",
        False,
        _PRODUCT,
    ),
    Theme(
        "country",
        ("Countries",),
        ("country", "country_code", "ctry", "BillingCountry", "nationality"),
        "Country",
        None,
        False,
        "str",
        ("Analytics",),
        "Country",
        False,
        _PEOPLE,
    ),
    Theme(
        "revenue",
        ("Revenue Metrics", "Marketing Metrics"),
        ("revenue", "amount", "total_amount", "net_sales", "AMOUNT_USD", "mrr"),
        None,
        None,
        False,
        "num",
        ("Financial", "Analytics"),
        "Revenue",
        False,
        _MONEY,
    ),
    Theme(
        "status",
        ("Status Flags",),
        ("status", "order_status", "is_active", "state_cd", "lifecycle_stage"),
        None,
        None,
        False,
        "str",
        ("Operational",),
        None,
        False,
        _PRODUCT,
    ),
    Theme(
        "session",
        ("Session Identifiers", "Device IDs"),
        ("session_id", "device_id", "cookie_id", "tracking_id", "visitor_id"),
        "Device ID",
        None,
        True,
        "str",
        ("Analytics",),
        "Session",
        False,
        _PRODUCT,
    ),
    Theme(
        "clicks",
        ("Engagement Metrics",),
        ("page_views", "click_count", "sessions_7d", "bounce_rate", "CTR"),
        None,
        None,
        False,
        "num",
        ("Analytics",),
        None,
        False,
        _PRODUCT,
    ),
)

# Suffixes that tell apart the sources of several clusters of the same theme.
INSTANCE_SUFFIXES = ("", "-eu", "-us", "-apac", "-staging", "-legacy", "-dev", "-prod2")

OWNERS = ("team-crm", "team-finance", "team-hr", "team-data-platform", "team-growth", None)
QUALIFIERS = ("", " (EU)", " (US)", " - legacy", " - staging", " v2")

# Awkward values real catalogs hold; applied to some rows deterministically (see data.py).
LONG_SUFFIX = "_" + "partitioned_by_region_and_ingestion_date_for_regulatory_retention" * 5
AWKWARD_CLUSTER_NAMES = (
    "Données clients — adresse e-mail",
    "顧客メールアドレス",
    "<script>alert(1)</script> exported emails",
    '"><img src=x onerror=alert(1)> card numbers',
    "بيانات العملاء الحساسة",
    "Terms &amp; Conditions acceptance",
    "📇 Contact cards 🚀",
    "Customer records " + LONG_SUFFIX,
)
