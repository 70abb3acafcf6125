//! The catalog's rules, without IO: what a valid product is, how an edit applies, and how a search
//! is normalised.

use emporium_events::Money;
use emporium_platform::api::{self, ApiError, Checks};
use uuid::Uuid;

pub const NAME_MAX: usize = 200;
pub const DESCRIPTION_MAX: usize = 5000;
pub const CATEGORY_MAX: usize = 100;
/// Longest search text.
pub const QUERY_MAX: usize = 200;
/// Largest price, minor units (ten billion dollars): far above any real price, and low enough that
/// the orders service's totals (100 lines of 1000 units) cannot overflow an `i64`.
pub const PRICE_MAX: i64 = 1_000_000_000_000;
/// Largest initial stock, for the same reason.
pub const STOCK_MAX: i64 = 1_000_000_000;

/// The editable part of a product.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductFields {
    pub name: String,
    pub description: Option<String>,
    pub category: String,
    pub price: Money,
}

pub use emporium_platform::api::Change;

/// `PATCH /api/products/{id}`, as parsed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ProductPatch {
    pub name: Change<String>,
    pub description: Change<String>,
    pub category: Change<String>,
    pub price: Change<Money>,
}

/// Does `text` hold a control character (Unicode `Cc`: C0, DEL, C1) other than those `allowed`?
/// They have no place in a product's text, and PostgreSQL refuses NUL in `TEXT` outright.
fn has_control(text: &str, allowed: &[char]) -> bool {
    text.chars()
        .any(|c| c.is_control() && !allowed.contains(&c))
}

/// What a description may hold besides printable text: lines (LF, or CRLF as HTML forms send
/// them) and tabs.
const DESCRIPTION_CONTROLS: &[char] = &['\n', '\r', '\t'];

fn check_line(checks: &mut Checks, field: &str, text: &str) {
    checks.check(
        !has_control(text, &[]),
        field,
        "must not contain control characters",
    );
}

fn check_name(checks: &mut Checks, name: &str) {
    checks.check(
        (1..=NAME_MAX).contains(&name.chars().count()),
        "name",
        format!("must be 1 to {NAME_MAX} characters"),
    );
    check_line(checks, "name", name);
}

fn check_description(checks: &mut Checks, description: &str) {
    checks.check(
        description.chars().count() <= DESCRIPTION_MAX,
        "description",
        format!("must be at most {DESCRIPTION_MAX} characters"),
    );
    checks.check(
        !has_control(description, DESCRIPTION_CONTROLS),
        "description",
        "must not contain control characters other than newlines and tabs",
    );
}

fn check_category(checks: &mut Checks, category: &str) {
    checks.check(
        (1..=CATEGORY_MAX).contains(&category.chars().count()),
        "category",
        format!("must be 1 to {CATEGORY_MAX} characters"),
    );
    check_line(checks, "category", category);
}

fn check_price(checks: &mut Checks, price: &Money) {
    checks.check(
        (0..=PRICE_MAX).contains(&price.amount),
        "price.amount",
        format!("must be an integer from 0 to {PRICE_MAX} (minor units)"),
    );
    checks.check(
        price.currency.len() == 3 && price.currency.bytes().all(|b| b.is_ascii_uppercase()),
        "price.currency",
        "must be an ISO 4217 code: three upper-case letters",
    );
}

/// Trims text fields; an empty or blank description is no description.
fn tidy_description(description: &str) -> Option<String> {
    let description = description.trim();
    (!description.is_empty()).then(|| description.to_owned())
}

/// Checks a new product and its initial stock; every wrong field is reported at once.
pub fn new_product(
    name: &str,
    description: Option<&str>,
    category: &str,
    price: Money,
    initial_stock: i64,
) -> Result<ProductFields, ApiError> {
    let mut checks = Checks::new();
    let name = name.trim();
    let category = category.trim();
    check_name(&mut checks, name);
    if let Some(description) = description {
        check_description(&mut checks, description);
    }
    check_category(&mut checks, category);
    check_price(&mut checks, &price);
    checks.check(
        (0..=STOCK_MAX).contains(&initial_stock),
        "initialStock",
        format!("must be an integer from 0 to {STOCK_MAX}"),
    );
    checks.finish()?;
    Ok(ProductFields {
        name: name.to_owned(),
        description: description.and_then(tidy_description),
        category: category.to_owned(),
        price,
    })
}

impl ProductFields {
    /// The product after `patch`, or the fields that make it invalid. Only the description can be
    /// cleared; the others are required.
    pub fn patched(&self, patch: &ProductPatch) -> Result<ProductFields, ApiError> {
        let mut checks = Checks::new();
        let mut next = self.clone();
        match &patch.name {
            Change::Keep => {}
            Change::Clear => {
                checks.check(false, "name", "cannot be null");
            }
            Change::Set(name) => {
                let name = name.trim();
                check_name(&mut checks, name);
                next.name = name.to_owned();
            }
        }
        match &patch.description {
            Change::Keep => {}
            Change::Clear => next.description = None,
            Change::Set(description) => {
                check_description(&mut checks, description);
                next.description = tidy_description(description);
            }
        }
        match &patch.category {
            Change::Keep => {}
            Change::Clear => {
                checks.check(false, "category", "cannot be null");
            }
            Change::Set(category) => {
                let category = category.trim();
                check_category(&mut checks, category);
                next.category = category.to_owned();
            }
        }
        match &patch.price {
            Change::Keep => {}
            Change::Clear => {
                checks.check(false, "price", "cannot be null");
            }
            Change::Set(price) => {
                check_price(&mut checks, price);
                next.price = price.clone();
            }
        }
        checks.finish()?;
        Ok(next)
    }
}

/// What searches compare: the text folded to lower case (Unicode-aware, the same on every database).
pub fn fold(text: &str) -> String {
    text.to_lowercase()
}

/// A listing's filters, checked: blank means no filter.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Filter {
    /// A `LIKE` pattern (escape character `!`) matching the folded name or description.
    pub pattern: Option<String>,
    /// The folded category, matched exactly.
    pub category: Option<String>,
    /// Only these products (empty: any).
    pub ids: Vec<String>,
}

/// Most ids one `?ids=` asks for: a page's worth.
pub const IDS_MAX: usize = 100;

/// `?ids=a,b,c`: product ids, for clients (the gateway's GraphQL) that fetch many in one request.
pub fn ids(text: Option<&str>) -> Result<Vec<String>, ApiError> {
    let Some(text) = text.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(Vec::new());
    };
    let mut ids: Vec<String> = api::product_ids(text, "ids", IDS_MAX)?
        .iter()
        .map(Uuid::to_string)
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

pub fn filter(q: Option<&str>, category: Option<&str>) -> Result<Filter, ApiError> {
    let q = q.map(str::trim).filter(|q| !q.is_empty());
    let category = category.map(str::trim).filter(|c| !c.is_empty());
    let mut checks = Checks::new();
    if let Some(q) = q {
        checks.check(
            q.chars().count() <= QUERY_MAX,
            "q",
            format!("must be at most {QUERY_MAX} characters"),
        );
        check_line(&mut checks, "q", q);
    }
    if let Some(category) = category {
        check_category(&mut checks, category);
    }
    checks.finish()?;
    Ok(Filter {
        pattern: q.map(|q| format!("%{}%", escape_like(&fold(q)))),
        category: category.map(fold),
        ids: Vec::new(),
    })
}

/// Escapes `LIKE`'s wildcards so the text matches only itself (escape character `!`).
fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '!' | '%' | '_') {
            escaped.push('!');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(error: ApiError) -> Vec<String> {
        error.errors.into_iter().map(|e| e.field).collect()
    }

    fn usd(amount: i64) -> Money {
        Money::new(amount, "USD")
    }

    fn lamp() -> ProductFields {
        new_product("Lamp", Some("A desk lamp"), "lighting", usd(1999), 5).unwrap()
    }

    #[test]
    fn a_valid_product_is_trimmed() {
        let p = new_product("  Lamp ", Some("  A lamp  "), " lighting ", usd(0), 0).unwrap();
        assert_eq!(p.name, "Lamp");
        assert_eq!(p.description.as_deref(), Some("A lamp"));
        assert_eq!(p.category, "lighting");
        assert_eq!(
            new_product("Lamp", Some("   "), "x", usd(1), 0)
                .unwrap()
                .description,
            None
        );
    }

    #[test]
    fn every_bad_product_field_is_named() {
        let error = new_product(
            "",
            Some(&"d".repeat(DESCRIPTION_MAX + 1)),
            "",
            Money::new(-1, "usd"),
            -1,
        )
        .unwrap_err();
        assert_eq!(
            fields(error),
            [
                "name",
                "description",
                "category",
                "price.amount",
                "price.currency",
                "initialStock"
            ]
        );
        assert_eq!(
            fields(
                new_product(
                    &"n".repeat(NAME_MAX + 1),
                    None,
                    &"c".repeat(CATEGORY_MAX + 1),
                    Money::new(PRICE_MAX + 1, "US"),
                    STOCK_MAX + 1
                )
                .unwrap_err()
            ),
            [
                "name",
                "category",
                "price.amount",
                "price.currency",
                "initialStock"
            ]
        );
        for currency in ["USDX", "U1D", "", "ÜSD"] {
            assert_eq!(
                fields(new_product("Lamp", None, "c", Money::new(1, currency), 0).unwrap_err()),
                ["price.currency"],
                "{currency}"
            );
        }
        assert!(
            new_product(
                &"n".repeat(NAME_MAX),
                Some(&"d".repeat(DESCRIPTION_MAX)),
                &"c".repeat(CATEGORY_MAX),
                usd(PRICE_MAX),
                STOCK_MAX
            )
            .is_ok()
        );
    }

    #[test]
    fn given_a_product_when_the_price_is_patched_then_only_the_price_changes() {
        let patch = ProductPatch {
            price: Change::Set(Money::new(2500, "EUR")),
            ..ProductPatch::default()
        };
        let next = lamp().patched(&patch).unwrap();
        assert_eq!(next.price, Money::new(2500, "EUR"));
        assert_eq!(
            ProductFields {
                price: usd(1999),
                ..next
            },
            lamp()
        );
    }

    #[test]
    fn given_a_product_when_the_description_is_nulled_then_it_is_cleared() {
        let patch = ProductPatch {
            description: Change::Clear,
            name: Change::Set(" Big lamp ".into()),
            ..ProductPatch::default()
        };
        let next = lamp().patched(&patch).unwrap();
        assert_eq!(next.description, None);
        assert_eq!(next.name, "Big lamp");
    }

    #[test]
    fn given_a_product_when_the_patch_is_empty_then_nothing_changes() {
        assert_eq!(lamp().patched(&ProductPatch::default()).unwrap(), lamp());
    }

    #[test]
    fn given_a_product_when_a_required_field_is_nulled_or_bad_then_it_is_named() {
        let patch = ProductPatch {
            name: Change::Clear,
            category: Change::Clear,
            price: Change::Clear,
            description: Change::Set("d".repeat(DESCRIPTION_MAX + 1)),
        };
        assert_eq!(
            fields(lamp().patched(&patch).unwrap_err()),
            ["name", "description", "category", "price"]
        );
        let bad_price = ProductPatch {
            price: Change::Set(Money::new(-5, "USD")),
            ..ProductPatch::default()
        };
        assert_eq!(
            fields(lamp().patched(&bad_price).unwrap_err()),
            ["price.amount"]
        );
    }

    #[test]
    fn control_characters_are_refused_but_a_description_may_have_lines_and_tabs() {
        for (name, description, category, field) in [
            ("La\0mp", None, "lighting", "name"),
            ("Desk\nlamp", None, "lighting", "name"),
            ("Lamp\u{7f}", None, "lighting", "name"),
            ("Lamp", Some("A\0 lamp"), "lighting", "description"),
            (
                "Lamp",
                Some("A \u{1b}[1mbold\u{1b}[0m lamp"),
                "lighting",
                "description",
            ),
            ("Lamp", Some("A lamp\u{9b}"), "lighting", "description"),
            ("Lamp", None, "light\ting", "category"),
            ("Lamp", None, "light\u{0}ing", "category"),
        ] {
            assert_eq!(
                fields(new_product(name, description, category, usd(1), 0).unwrap_err()),
                [field],
                "{name:?} {description:?} {category:?}"
            );
        }
        let text = "Bright.\n\tDimmable.\r\nWarm white.";
        let lamp = new_product("Lamp", Some(text), "lighting", usd(1), 0).unwrap();
        assert_eq!(lamp.description.as_deref(), Some(text));
        let patch = ProductPatch {
            name: Change::Set("L\0".into()),
            description: Change::Set("d\u{7}".into()),
            category: Change::Set("c\u{1}".into()),
            ..ProductPatch::default()
        };
        assert_eq!(
            fields(lamp.patched(&patch).unwrap_err()),
            ["name", "description", "category"]
        );
        assert_eq!(
            fields(filter(Some("la\0mp"), Some("c\0")).unwrap_err()),
            ["q", "category"]
        );
    }

    #[test]
    fn searches_are_folded_and_wildcards_escaped() {
        let f = filter(Some("  50%_Off!  "), Some(" Lighting ")).unwrap();
        assert_eq!(f.pattern.as_deref(), Some("%50!%!_off!!%"));
        assert_eq!(f.category.as_deref(), Some("lighting"));
        assert_eq!(filter(Some(" "), Some("")).unwrap(), Filter::default());
        assert_eq!(filter(None, None).unwrap(), Filter::default());
        assert_eq!(fold("ÉCLAIR"), "éclair");
    }

    #[test]
    fn overlong_search_parameters_are_named() {
        let error = filter(
            Some(&"q".repeat(QUERY_MAX + 1)),
            Some(&"c".repeat(CATEGORY_MAX + 1)),
        )
        .unwrap_err();
        assert_eq!(fields(error), ["q", "category"]);
    }
}
