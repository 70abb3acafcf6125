//! The recommendation model, without IO: what counting an order adds, what is recommendable, how
//! candidates are scored and explained, and the small rules around them (limits, stock, orders,
//! the email period).
//!
//! # Scoring
//! A ranking starts from **anchors** (the products a user bought, or the product being viewed) and
//! an **affinity** per category (the share of the user's purchases in it, or 1 for the viewed
//! product's category). Every other product `b` scores
//!
//! ```text
//! score(b) = co(b) + CATEGORY_WEIGHT * affinity(category(b)) * sales(b) + BEST_SELLER_WEIGHT * sales(b)
//! ```
//!
//! where `co(b)` is the number of counted orders that held `b` together with an anchor (summed over
//! the anchors) and `sales(b)` the number of counted orders that held `b`. The three terms are the
//! co-purchase signal, the category signal and the best-seller fallback: with no history only the
//! last one is left, which ranks best sellers. The reason given is the largest term ("Often bought
//! with <the anchor bought with it most>", "Popular in <category>", "Best seller"; co-purchase
//! wins ties, then category). Products scoring 0 are not recommended.
//!
//! Results are ordered by score (rounded to 4 decimals, so float noise cannot reorder equal
//! scores), highest first, ties broken by product id, so the same model always gives the same list.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    time::Duration,
};

use uuid::Uuid;

/// Weight of the category signal relative to one co-purchase.
pub const CATEGORY_WEIGHT: f64 = 0.5;
/// Weight of the best-seller signal relative to one co-purchase.
pub const BEST_SELLER_WEIGHT: f64 = 0.1;

/// `?limit=` when absent, and its bounds.
pub const DEFAULT_LIMIT: usize = 10;
pub const MAX_LIMIT: usize = 100;

/// How many products the recommendations email names.
pub const EMAIL_PRODUCTS: usize = 5;

/// `?limit=`: absent or empty means [`DEFAULT_LIMIT`]; otherwise an integer from 1 to
/// [`MAX_LIMIT`]. The error is the message for the `limit` field.
pub fn parse_limit(text: Option<&str>) -> Result<usize, &'static str> {
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        None => Ok(DEFAULT_LIMIT),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=MAX_LIMIT).contains(&n) => Ok(n),
            _ => Err("must be an integer from 1 to 100"),
        },
    }
}

/// Categories compare without regard to case or surrounding space, as the catalog searches them.
pub fn category_key(category: &str) -> String {
    category.trim().to_lowercase()
}

// ------------------------------------------------------------------- stock

/// Whether a product can be recommended as far as stock goes. `available` is the last figure
/// inventory announced (`StockAdjusted`, `LowStock`, `InventoryRejected`); a product it never
/// announced is assumed in stock.
pub fn in_stock(available: Option<i64>) -> bool {
    available.is_none_or(|n| n > 0)
}

// ------------------------------------------------------------------ orders

/// What the model knows of an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OrderState {
    /// Created, lines remembered, not counted.
    Pending,
    /// Confirmed: its lines count toward sales and co-purchases.
    Counted,
    /// Cancelled: not counted (any more).
    Cancelled,
}

impl OrderState {
    pub const ALL: [OrderState; 3] = [
        OrderState::Pending,
        OrderState::Counted,
        OrderState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            OrderState::Pending => "PENDING",
            OrderState::Counted => "COUNTED",
            OrderState::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(text: &str) -> Option<OrderState> {
        Self::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// `OrderConfirmed`: a pending order starts counting; anything else stays as it is.
    pub fn confirm(self) -> Option<OrderState> {
        (self == OrderState::Pending).then_some(OrderState::Counted)
    }

    /// `OrderCancelled`: a pending or counted order is cancelled (a counted one stops counting).
    pub fn cancel(self) -> Option<OrderState> {
        (self != OrderState::Cancelled).then_some(OrderState::Cancelled)
    }
}

/// What counting one order adds to the model (subtracting it takes the same away).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contribution {
    /// Each distinct product of the order: one more sale.
    pub products: Vec<Uuid>,
    /// Each ordered pair of distinct products of the order, both ways: one more co-purchase.
    pub pairs: Vec<(Uuid, Uuid)>,
}

impl Contribution {
    /// From an order's product ids (repeats count once: it is one order).
    pub fn of(products: impl IntoIterator<Item = Uuid>) -> Contribution {
        let products: Vec<Uuid> = products
            .into_iter()
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut pairs = Vec::with_capacity(products.len() * products.len().saturating_sub(1));
        for a in &products {
            for b in &products {
                if a != b {
                    pairs.push((*a, *b));
                }
            }
        }
        Contribution { products, pairs }
    }
}

// ------------------------------------------------------------ the email

/// A user who last got the recommendations email at `last_sent` (epoch millis) is due another at
/// `now` when `period` has passed since.
pub fn email_due(last_sent: Option<i64>, now: i64, period: Duration) -> bool {
    match last_sent {
        None => true,
        Some(last) => now.saturating_sub(last) >= period_millis(period),
    }
}

pub fn period_millis(period: Duration) -> i64 {
    i64::try_from(period.as_millis()).unwrap_or(i64::MAX)
}

// ------------------------------------------------------------------ model

/// What the model knows of a product.
#[derive(Debug, Clone, PartialEq)]
pub struct ProductFacts {
    pub name: String,
    pub category: String,
    pub deleted: bool,
    /// Last announced available units (see [`in_stock`]).
    pub available: Option<i64>,
}

impl ProductFacts {
    /// Not deleted and not known to be out of stock.
    pub fn recommendable(&self) -> bool {
        !self.deleted && in_stock(self.available)
    }
}

/// The part of the model a ranking looks at: products, their sales and their co-purchases. The
/// service loads only the slice a request needs; tests build whole small worlds.
#[derive(Debug, Clone, Default)]
pub struct Model {
    products: BTreeMap<Uuid, ProductFacts>,
    sales: BTreeMap<Uuid, u64>,
    /// `(a, b)` → counted orders holding both; the store keeps both directions.
    pairs: BTreeMap<(Uuid, Uuid), u64>,
}

impl Model {
    pub fn new() -> Model {
        Model::default()
    }

    pub fn add_product(&mut self, id: Uuid, facts: ProductFacts) {
        self.products.insert(id, facts);
    }

    pub fn set_sales(&mut self, id: Uuid, orders: u64) {
        self.sales.insert(id, orders);
    }

    /// One direction of a co-purchase count.
    pub fn set_pair(&mut self, a: Uuid, b: Uuid, orders: u64) {
        self.pairs.insert((a, b), orders);
    }

    /// Counts an order, as the store does on `OrderConfirmed`.
    pub fn count_order(&mut self, products: impl IntoIterator<Item = Uuid>) {
        let contribution = Contribution::of(products);
        for id in contribution.products {
            *self.sales.entry(id).or_default() += 1;
        }
        for pair in contribution.pairs {
            *self.pairs.entry(pair).or_default() += 1;
        }
    }

    pub fn product(&self, id: Uuid) -> Option<&ProductFacts> {
        self.products.get(&id)
    }

    fn sales(&self, id: Uuid) -> u64 {
        self.sales.get(&id).copied().unwrap_or(0)
    }

    fn pair(&self, a: Uuid, b: Uuid) -> u64 {
        self.pairs.get(&(a, b)).copied().unwrap_or(0)
    }
}

/// Why a product is recommended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// Co-purchase: bought together with this anchor (its name) more than with any other.
    BoughtWith(String),
    /// Category affinity: sells well in this category (as the product names it).
    PopularIn(String),
    /// The fallback: sells well overall.
    BestSeller,
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::BoughtWith(name) => write!(f, "Often bought with {name}"),
            Reason::PopularIn(category) => write!(f, "Popular in {category}"),
            Reason::BestSeller => f.write_str("Best seller"),
        }
    }
}

/// One recommended product.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub product_id: Uuid,
    /// Rounded to 4 decimals.
    pub score: f64,
    pub reason: Reason,
}

/// Recommendations for a user who bought `history` (product → how many of the user's counted
/// orders held it): anchors are those products, affinity the share of those purchases per
/// category; nothing the user bought is recommended.
pub fn for_user(model: &Model, history: &BTreeMap<Uuid, u64>, limit: usize) -> Vec<Scored> {
    let mut per_category: BTreeMap<String, u64> = BTreeMap::new();
    for (id, orders) in history {
        if let Some(facts) = model.product(*id) {
            *per_category
                .entry(category_key(&facts.category))
                .or_default() += orders;
        }
    }
    let total: u64 = per_category.values().sum();
    let affinity: BTreeMap<String, f64> = per_category
        .into_iter()
        .map(|(category, n)| (category, n as f64 / total as f64))
        .collect();
    let anchors: BTreeSet<Uuid> = history.keys().copied().collect();
    rank(model, &anchors, &affinity, &anchors, limit)
}

/// Recommendations on the page of `product`: bought with it, else popular in its category, else
/// best sellers; never the product itself. Empty for a product the model does not know.
pub fn for_product(model: &Model, product: Uuid, limit: usize) -> Vec<Scored> {
    let Some(facts) = model.product(product) else {
        return Vec::new();
    };
    let anchors = BTreeSet::from([product]);
    let affinity = BTreeMap::from([(category_key(&facts.category), 1.0)]);
    rank(model, &anchors, &affinity, &anchors, limit)
}

fn round(score: f64) -> f64 {
    (score * 10_000.0).round() / 10_000.0
}

fn rank(
    model: &Model,
    anchors: &BTreeSet<Uuid>,
    affinity: &BTreeMap<String, f64>,
    excluded: &BTreeSet<Uuid>,
    limit: usize,
) -> Vec<Scored> {
    let mut scored: Vec<Scored> = model
        .products
        .iter()
        .filter(|(id, facts)| !excluded.contains(id) && facts.recommendable())
        .filter_map(|(id, facts)| {
            // The anchor bought with it most (the first by id among equals), named if known.
            let mut co = 0u64;
            let mut best_anchor: Option<(u64, &ProductFacts)> = None;
            for anchor in anchors {
                let n = model.pair(*anchor, *id);
                co += n;
                if n > 0
                    && let Some(anchor_facts) = model.product(*anchor)
                    && best_anchor.is_none_or(|(most, _)| n > most)
                {
                    best_anchor = Some((n, anchor_facts));
                }
            }
            let sales = model.sales(*id) as f64;
            let co = co as f64;
            let category = CATEGORY_WEIGHT
                * affinity
                    .get(&category_key(&facts.category))
                    .copied()
                    .unwrap_or(0.0)
                * sales;
            let best = BEST_SELLER_WEIGHT * sales;
            let score = round(co + category + best);
            if score <= 0.0 {
                return None;
            }
            let reason = match best_anchor {
                Some((_, anchor)) if co >= category && co >= best => {
                    Reason::BoughtWith(anchor.name.clone())
                }
                _ if category > 0.0 && category >= best => {
                    Reason::PopularIn(facts.category.clone())
                }
                _ => Reason::BestSeller,
            };
            Some(Scored {
                product_id: *id,
                score,
                reason,
            })
        })
        .collect();
    scored.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(a.product_id.cmp(&b.product_id))
    });
    scored.truncate(limit);
    scored
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small world: products with ids that sort in the order they are declared.
    struct World {
        model: Model,
        ids: BTreeMap<&'static str, Uuid>,
    }

    impl World {
        fn new(products: &[(&'static str, &str)]) -> World {
            let mut model = Model::new();
            let mut ids = BTreeMap::new();
            for (i, (name, category)) in products.iter().enumerate() {
                let id = Uuid::from_u128(i as u128 + 1);
                model.add_product(
                    id,
                    ProductFacts {
                        name: (*name).to_owned(),
                        category: (*category).to_owned(),
                        deleted: false,
                        available: None,
                    },
                );
                ids.insert(*name, id);
            }
            World { model, ids }
        }

        fn id(&self, name: &str) -> Uuid {
            self.ids[name]
        }

        fn order(&mut self, names: &[&str]) {
            let ids: Vec<Uuid> = names.iter().map(|n| self.id(n)).collect();
            self.model.count_order(ids);
        }

        fn history(&self, names: &[(&str, u64)]) -> BTreeMap<Uuid, u64> {
            names.iter().map(|(n, k)| (self.id(n), *k)).collect()
        }

        fn facts(&mut self, name: &str) -> &mut ProductFacts {
            let id = self.id(name);
            self.model.products.get_mut(&id).unwrap()
        }

        fn name(&self, id: Uuid) -> &str {
            &self.model.product(id).unwrap().name
        }

        fn names(&self, scored: &[Scored]) -> Vec<&str> {
            scored.iter().map(|s| self.name(s.product_id)).collect()
        }
    }

    fn coffee_shop() -> World {
        World::new(&[
            ("Espresso Machine", "Coffee"),
            ("Grinder", "Coffee"),
            ("Beans", "Coffee"),
            ("Mug", "Kitchen"),
            ("Kettle", "Kitchen"),
            ("Novel", "Books"),
        ])
    }

    #[test]
    fn a_buyer_of_a_is_recommended_what_others_bought_with_a_naming_a() {
        let mut w = coffee_shop();
        for _ in 0..3 {
            w.order(&["Espresso Machine", "Grinder"]);
        }
        w.order(&["Espresso Machine", "Mug"]);
        let recs = for_user(&w.model, &w.history(&[("Espresso Machine", 1)]), 10);
        assert_eq!(w.names(&recs), ["Grinder", "Mug"]);
        assert_eq!(
            recs[0].reason,
            Reason::BoughtWith("Espresso Machine".into())
        );
        assert_eq!(
            recs[0].reason.to_string(),
            "Often bought with Espresso Machine"
        );
        // 3 co-purchases + 0.5 * affinity 1 (Coffee) * 3 sales + 0.1 * 3 sales.
        assert_eq!(recs[0].score, 4.8);
        // 1 co-purchase + no Coffee affinity for a Kitchen product + 0.1 * 1 sale.
        assert_eq!(recs[1].score, 1.1);
    }

    #[test]
    fn co_purchases_add_up_over_the_anchors_and_the_reason_names_the_strongest() {
        let mut w = coffee_shop();
        w.order(&["Espresso Machine", "Beans"]);
        w.order(&["Grinder", "Beans"]);
        w.order(&["Grinder", "Beans"]);
        let history = w.history(&[("Espresso Machine", 1), ("Grinder", 1)]);
        let recs = for_user(&w.model, &history, 10);
        assert_eq!(w.names(&recs), ["Beans"]);
        // co 1 + 2, category 0.5 * 1 * 3, best 0.1 * 3.
        assert_eq!(recs[0].score, 4.8);
        assert_eq!(recs[0].reason, Reason::BoughtWith("Grinder".into()));
    }

    #[test]
    fn equally_strong_anchors_are_named_by_id() {
        let mut w = coffee_shop();
        w.order(&["Grinder", "Beans"]);
        w.order(&["Espresso Machine", "Beans"]);
        let history = w.history(&[("Grinder", 1), ("Espresso Machine", 1)]);
        let recs = for_user(&w.model, &history, 10);
        assert_eq!(
            recs[0].reason,
            Reason::BoughtWith("Espresso Machine".into()),
            "the anchor with the smaller id"
        );
    }

    #[test]
    fn category_affinity_ranks_popular_products_of_the_users_categories() {
        let mut w = coffee_shop();
        // Kettle and Novel sell as often; the user only ever bought kitchen things.
        for _ in 0..4 {
            w.order(&["Kettle"]);
            w.order(&["Novel"]);
        }
        w.order(&["Mug"]);
        let recs = for_user(&w.model, &w.history(&[("Mug", 2)]), 10);
        assert_eq!(w.names(&recs), ["Kettle", "Novel"]);
        assert_eq!(recs[0].reason, Reason::PopularIn("Kitchen".into()));
        assert_eq!(recs[0].reason.to_string(), "Popular in Kitchen");
        assert_eq!(recs[0].score, 2.4, "0.5 * 1 * 4 + 0.1 * 4");
        assert_eq!(recs[1].reason, Reason::BestSeller);
        assert_eq!(recs[1].score, 0.4);
    }

    #[test]
    fn affinity_is_the_share_of_the_users_purchases_per_category() {
        let mut w = coffee_shop();
        for _ in 0..2 {
            w.order(&["Beans"]);
            w.order(&["Kettle"]);
        }
        // Three coffee purchases to one kitchen one: affinity 0.75 and 0.25.
        let history = w.history(&[("Grinder", 3), ("Mug", 1)]);
        let recs = for_user(&w.model, &history, 10);
        assert_eq!(w.names(&recs), ["Beans", "Kettle"]);
        assert_eq!(recs[0].score, 0.95, "0.5 * 0.75 * 2 + 0.1 * 2");
        assert_eq!(recs[1].score, 0.45, "0.5 * 0.25 * 2 + 0.1 * 2");
        assert_eq!(recs[1].reason, Reason::PopularIn("Kitchen".into()));
    }

    #[test]
    fn categories_match_whatever_their_case() {
        let mut w = World::new(&[("Mug", "kitchen"), ("Kettle", " Kitchen ")]);
        w.order(&["Kettle"]);
        let recs = for_user(&w.model, &w.history(&[("Mug", 1)]), 10);
        assert_eq!(recs[0].reason, Reason::PopularIn(" Kitchen ".into()));
    }

    #[test]
    fn a_user_without_history_gets_best_sellers_by_sales_then_id() {
        let mut w = coffee_shop();
        w.order(&["Novel"]);
        w.order(&["Novel", "Mug"]);
        w.order(&["Beans"]);
        w.order(&["Kettle"]);
        let recs = for_user(&w.model, &BTreeMap::new(), 10);
        // Beans, Mug and Kettle sold once each: by id, which is declaration order here.
        assert_eq!(w.names(&recs), ["Novel", "Beans", "Mug", "Kettle"]);
        assert!(recs.iter().all(|r| r.reason == Reason::BestSeller));
        assert_eq!(recs[0].score, 0.2);
        assert_eq!(recs[1].score, 0.1);
    }

    #[test]
    fn nothing_sold_means_nothing_to_recommend() {
        let w = coffee_shop();
        assert!(for_user(&w.model, &BTreeMap::new(), 10).is_empty());
        let id = w.id("Mug");
        assert!(for_product(&w.model, id, 10).is_empty());
    }

    #[test]
    fn what_the_user_bought_is_never_recommended_to_them() {
        let mut w = coffee_shop();
        w.order(&["Espresso Machine", "Grinder", "Beans"]);
        let history = w.history(&[("Espresso Machine", 1), ("Grinder", 1)]);
        let recs = for_user(&w.model, &history, 10);
        assert_eq!(w.names(&recs), ["Beans"]);
    }

    #[test]
    fn deleted_and_out_of_stock_products_are_left_out() {
        let mut w = coffee_shop();
        for _ in 0..2 {
            w.order(&["Espresso Machine", "Grinder", "Beans", "Mug", "Kettle"]);
        }
        w.facts("Grinder").deleted = true;
        w.facts("Beans").available = Some(0);
        w.facts("Mug").available = Some(-1);
        w.facts("Kettle").available = Some(3);
        let history = w.history(&[("Espresso Machine", 2)]);
        assert_eq!(w.names(&for_user(&w.model, &history, 10)), ["Kettle"]);
        let machine = w.id("Espresso Machine");
        assert_eq!(w.names(&for_product(&w.model, machine, 10)), ["Kettle"]);
        assert_eq!(
            w.names(&for_user(&w.model, &BTreeMap::new(), 10)),
            ["Espresso Machine", "Kettle"]
        );
    }

    #[test]
    fn a_deleted_anchor_still_explains_its_co_purchases() {
        let mut w = coffee_shop();
        w.order(&["Espresso Machine", "Grinder"]);
        w.facts("Espresso Machine").deleted = true;
        let recs = for_user(&w.model, &w.history(&[("Espresso Machine", 1)]), 10);
        assert_eq!(
            recs[0].reason,
            Reason::BoughtWith("Espresso Machine".into())
        );
    }

    #[test]
    fn a_product_page_shows_what_is_bought_with_it_then_its_category_never_itself() {
        let mut w = coffee_shop();
        w.order(&["Espresso Machine", "Mug"]);
        w.order(&["Espresso Machine", "Mug"]);
        w.order(&["Beans"]);
        w.order(&["Novel"]);
        let machine = w.id("Espresso Machine");
        let recs = for_product(&w.model, machine, 10);
        assert_eq!(w.names(&recs), ["Mug", "Beans", "Novel"]);
        assert_eq!(
            recs.iter()
                .map(|r| r.reason.to_string())
                .collect::<Vec<_>>(),
            [
                "Often bought with Espresso Machine",
                "Popular in Coffee",
                "Best seller"
            ]
        );
        assert_eq!(
            recs.iter().map(|r| r.score).collect::<Vec<_>>(),
            [2.2, 0.6, 0.1]
        );
        assert!(recs.iter().all(|r| r.product_id != machine));
        assert!(for_product(&w.model, Uuid::from_u128(999), 10).is_empty());
    }

    #[test]
    fn the_limit_cuts_the_ranked_list() {
        let mut w = coffee_shop();
        w.order(&["Novel", "Mug", "Kettle", "Beans"]);
        w.order(&["Novel"]);
        let all = for_user(&w.model, &BTreeMap::new(), 10);
        let two = for_user(&w.model, &BTreeMap::new(), 2);
        assert_eq!(two, all[..2]);
        assert!(for_user(&w.model, &BTreeMap::new(), 0).is_empty());
    }

    #[test]
    fn rankings_are_deterministic() {
        let mut w = coffee_shop();
        w.order(&["Espresso Machine", "Grinder", "Beans", "Mug"]);
        w.order(&["Kettle", "Novel"]);
        let history = w.history(&[("Espresso Machine", 1)]);
        let first = for_user(&w.model, &history, 10);
        for _ in 0..10 {
            assert_eq!(for_user(&w.model.clone(), &history, 10), first);
        }
        // Grinder and Beans tie exactly: the smaller id first.
        assert_eq!(w.names(&first)[..2], ["Grinder", "Beans"]);
    }

    #[test]
    fn float_noise_does_not_break_ties() {
        assert_eq!(round(0.1 + 0.2), round(0.3));
        assert_eq!(round(2.15), 2.15);
    }

    #[test]
    fn an_order_contributes_each_product_once_and_every_pair_both_ways() {
        let (a, b, c) = (Uuid::from_u128(1), Uuid::from_u128(2), Uuid::from_u128(3));
        let contribution = Contribution::of([b, a, b, c]);
        assert_eq!(contribution.products, [a, b, c]);
        assert_eq!(
            contribution.pairs,
            [(a, b), (a, c), (b, a), (b, c), (c, a), (c, b)]
        );
        assert!(Contribution::of([a]).pairs.is_empty());
    }

    #[test]
    fn orders_count_when_confirmed_and_stop_when_cancelled() {
        use OrderState::*;
        assert_eq!(Pending.confirm(), Some(Counted));
        assert_eq!(Counted.confirm(), None, "counted once");
        assert_eq!(Cancelled.confirm(), None, "a cancelled order never counts");
        assert_eq!(Pending.cancel(), Some(Cancelled));
        assert_eq!(Counted.cancel(), Some(Cancelled));
        assert_eq!(Cancelled.cancel(), None);
        for state in OrderState::ALL {
            assert_eq!(OrderState::parse(state.as_str()), Some(state));
        }
        assert_eq!(OrderState::parse("SHIPPED"), None);
    }

    #[test]
    fn stock_is_out_only_when_announced_at_zero_or_below() {
        assert!(in_stock(None));
        assert!(in_stock(Some(1)));
        assert!(!in_stock(Some(0)));
        assert!(!in_stock(Some(-2)));
    }

    #[test]
    fn the_email_is_due_once_per_period() {
        let week = Duration::from_secs(7 * 24 * 3600);
        let sent = 1_000_000;
        assert!(email_due(None, sent, week));
        assert!(!email_due(Some(sent), sent, week));
        assert!(!email_due(Some(sent), sent + period_millis(week) - 1, week));
        assert!(email_due(Some(sent), sent + period_millis(week), week));
        assert_eq!(period_millis(Duration::MAX), i64::MAX);
    }

    #[test]
    fn limits_default_to_ten_and_stay_within_one_to_a_hundred() {
        assert_eq!(parse_limit(None), Ok(10));
        assert_eq!(parse_limit(Some("")), Ok(10));
        assert_eq!(parse_limit(Some(" 3 ")), Ok(3));
        assert_eq!(parse_limit(Some("100")), Ok(100));
        for bad in ["0", "101", "-1", "ten", "1.5", "99999999999999999999999"] {
            assert_eq!(
                parse_limit(Some(bad)),
                Err("must be an integer from 1 to 100"),
                "{bad}"
            );
        }
    }
}
