//! The synthetic e-commerce traffic generator (`runnel generate`, and the in-process default
//! source of `runnel run`).
//!
//! Deterministic for a seed: the same seed gives byte-identical output. It starts with 500
//! customers and 100 products, then mixes transactions, product views, interactions and logs
//! with occasional logins, new customers, new products, price changes and restocks. Popularity is
//! skewed (Zipf-like): a few best sellers, a long tail, and some products that never sell.
//!
//! Events are written as JSON lines by hand (no serde per event) so that the generator is never
//! the bottleneck of a benchmark.

mod json;
mod text;

use fake::faker::address::en::CityName;
use fake::faker::company::en::CompanyName;
use fake::faker::internet::en::FreeEmailProvider;
use fake::faker::name::en::{FirstName, LastName};
use fake::Fake;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub use json::format_timestamp_ms;
use json::JsonLine;

/// The six streams the generator produces, in a fixed order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Topic {
    Customers = 0,
    Products = 1,
    Transactions = 2,
    ProductViews = 3,
    UserInteractions = 4,
    SystemLogs = 5,
}

impl Topic {
    pub const ALL: [Topic; 6] = [
        Topic::Customers,
        Topic::Products,
        Topic::Transactions,
        Topic::ProductViews,
        Topic::UserInteractions,
        Topic::SystemLogs,
    ];
    /// The Kafka topic, as in the original design.
    pub fn topic(self) -> &'static str {
        match self {
            Topic::Customers => "customer_data",
            Topic::Products => "product_data",
            Topic::Transactions => "transaction_data",
            Topic::ProductViews => "product_view_data",
            Topic::UserInteractions => "user_interaction_data",
            Topic::SystemLogs => "system_log_data",
        }
    }
    /// The stream (table) name queries use.
    pub fn stream(self) -> &'static str {
        match self {
            Topic::Customers => "customers",
            Topic::Products => "products",
            Topic::Transactions => "transactions",
            Topic::ProductViews => "product_views",
            Topic::UserInteractions => "user_interactions",
            Topic::SystemLogs => "system_logs",
        }
    }
}

/// Where event times come from.
#[derive(Debug, Clone, Copy)]
pub enum Clock {
    /// Replay: start at a fixed instant (ms since the epoch) and advance 0–20 ms per event
    /// (about 100 events per simulated second), deterministic for the seed.
    Simulated { start_ms: i64 },
    /// Live: event times are the wall clock when the event is made.
    Wall,
}

/// 2026-01-01T00:00:00Z, the default start of simulated time.
pub const DEFAULT_START_MS: i64 = 1_767_225_600_000;

const CATEGORIES: [(&str, f64, f64); 8] = [
    ("Electronics", 40.0, 900.0),
    ("Clothing", 8.0, 120.0),
    ("Home & Kitchen", 10.0, 300.0),
    ("Books", 5.0, 60.0),
    ("Sports", 10.0, 250.0),
    ("Beauty", 5.0, 80.0),
    ("Toys", 5.0, 90.0),
    ("Grocery", 2.0, 40.0),
];
const PAYMENT: [&str; 5] = [
    "credit_card",
    "debit_card",
    "paypal",
    "gift_card",
    "bank_transfer",
];
const SERVICES: [&str; 6] = [
    "checkout",
    "catalog",
    "search",
    "auth",
    "payments",
    "inventory",
];

struct Customer {
    id: String,
    name: String,
    email: String,
    gender: &'static str,
    age: i32,
    location: String,
    signup_ms: i64,
}

struct Product {
    id: String,
    name: String,
    category: &'static str,
    price: f64,
    stock: i64,
    supplier: String,
    rating: f64,
}

/// Produces one event at a time into per-topic NDJSON buffers.
pub struct Generator {
    rng: ChaCha8Rng,
    clock: Clock,
    now_ms: i64,
    customers: Vec<Customer>,
    products: Vec<Product>,
    /// Cumulative popularity weights over `products` (for sampling with a binary search).
    popularity: Vec<f64>,
    /// Initial rows still to emit before the regular mix starts.
    pending_customers: usize,
    pending_products: usize,
    /// Whether new customers and products keep arriving after the initial 500 and 100.
    catalog_growth: bool,
    seq: u64,
    line: JsonLine,
}

impl Generator {
    pub fn new(seed: u64, clock: Clock) -> Self {
        let now_ms = match clock {
            Clock::Simulated { start_ms } => start_ms,
            Clock::Wall => wall_ms(),
        };
        let mut g = Generator {
            rng: ChaCha8Rng::seed_from_u64(seed),
            clock,
            now_ms,
            customers: Vec::with_capacity(1024),
            products: Vec::with_capacity(256),
            popularity: Vec::new(),
            pending_customers: 500,
            pending_products: 100,
            catalog_growth: true,
            seq: 0,
            line: JsonLine::default(),
        };
        for _ in 0..500 {
            g.new_customer();
        }
        for _ in 0..100 {
            g.new_product();
        }
        g
    }

    /// Keeps the initial 500 customers and 100 products for good (no sign-ups, no new
    /// products): the key space stays fixed while history grows, as benchmarks of per-event
    /// cost against history need.
    pub fn fixed_catalog(mut self) -> Self {
        self.catalog_growth = false;
        self
    }

    /// Writes the next event, one JSON line ending in `\n`, to `out[topic as usize]`.
    pub fn next_into(&mut self, out: &mut [Vec<u8>; 6]) -> Topic {
        self.seq += 1;
        self.advance_clock();
        let topic = if self.pending_customers > 0 {
            let i = 500 - self.pending_customers;
            self.pending_customers -= 1;
            self.write_customer(i, self.now_ms);
            Topic::Customers
        } else if self.pending_products > 0 {
            let i = 100 - self.pending_products;
            self.pending_products -= 1;
            self.write_product(i);
            Topic::Products
        } else {
            self.regular_event()
        };
        out[topic as usize].extend_from_slice(self.line.finish());
        topic
    }

    /// Event time of the next event (with a little disorder for event streams).
    fn event_time(&mut self) -> i64 {
        // Up to 2 s out of order: within every shipped stream's 5 s watermark delay.
        if self.rng.random_ratio(1, 10) {
            self.now_ms - self.rng.random_range(0..2000)
        } else {
            self.now_ms
        }
    }

    fn advance_clock(&mut self) {
        match self.clock {
            Clock::Simulated { .. } => self.now_ms += self.rng.random_range(0..=20),
            Clock::Wall => {
                if self.seq.is_multiple_of(64) {
                    self.now_ms = wall_ms().max(self.now_ms);
                }
            }
        }
    }

    fn regular_event(&mut self) -> Topic {
        let r: u32 = self.rng.random_range(0..10_000);
        match r {
            0..3_000 => {
                self.write_transaction();
                Topic::Transactions
            }
            3_000..7_000 => {
                self.write_view();
                Topic::ProductViews
            }
            7_000..8_500 => {
                self.write_interaction();
                Topic::UserInteractions
            }
            8_500..9_700 => {
                self.write_log();
                Topic::SystemLogs
            }
            9_700..9_850 => {
                // A returning customer logs in (or, rarely, a new one signs up).
                let i = if self.rng.random_ratio(1, 15) && self.catalog_growth {
                    self.new_customer()
                } else {
                    self.rng.random_range(0..self.customers.len())
                };
                let t = self.now_ms;
                self.write_customer(i, t);
                Topic::Customers
            }
            _ => {
                // Restock, sale, price change, or (rarely) a new product.
                let i = if self.rng.random_ratio(1, 40) && self.catalog_growth {
                    self.new_product()
                } else {
                    self.sample_product()
                };
                let p = &mut self.products[i];
                match self.rng.random_range(0..4) {
                    // Restocks arrive in large lots, so popular products are low only sometimes.
                    0 => p.stock += self.rng.random_range(200..5000),
                    1 => {
                        let f = self.rng.random_range(0.9..1.1);
                        p.price = (p.price * f * 100.0).round() / 100.0;
                    }
                    _ => p.stock = (p.stock - self.rng.random_range(1..30)).max(0),
                }
                self.write_product(i);
                Topic::Products
            }
        }
    }

    fn new_customer(&mut self) -> usize {
        let i = self.customers.len();
        let first: String = FirstName().fake_with_rng(&mut self.rng);
        let last: String = LastName().fake_with_rng(&mut self.rng);
        let provider: String = FreeEmailProvider().fake_with_rng(&mut self.rng);
        let email = format!(
            "{}.{}{}@{}",
            first.to_lowercase(),
            last.to_lowercase().replace(['\'', ' '], ""),
            i,
            provider
        );
        let gender = match self.rng.random_range(0..100) {
            0..48 => "Male",
            48..96 => "Female",
            _ => "Other",
        };
        let location: String = CityName().fake_with_rng(&mut self.rng);
        let age = self.rng.random_range(18..80);
        let signup_ms = self.now_ms - self.rng.random_range(0..730) * 86_400_000;
        self.customers.push(Customer {
            id: format!("CUST-{:06}", i + 1),
            name: format!("{first} {last}"),
            email,
            gender,
            age,
            location,
            signup_ms,
        });
        i
    }

    fn new_product(&mut self) -> usize {
        let i = self.products.len();
        let (category, lo, hi) = CATEGORIES[self.rng.random_range(0..CATEGORIES.len())];
        let price = (self.rng.random_range(lo..hi) * 100.0f64).round() / 100.0;
        let supplier: String = CompanyName().fake_with_rng(&mut self.rng);
        let name = text::product_name(&mut self.rng, category);
        self.products.push(Product {
            id: format!("PROD-{:05}", i + 1),
            name,
            category,
            price,
            stock: self.rng.random_range(0..400),
            supplier,
            rating: (self.rng.random_range(1.0..5.0f64) * 10.0).round() / 10.0,
        });
        // Zipf-like popularity by creation order, with one product in ten never selling.
        let weight = if self.rng.random_ratio(1, 10) {
            0.0
        } else {
            let rank = self.rng.random_range(1..=(i + 1)) as f64;
            1.0 / rank.powf(1.1)
        };
        let total = self.popularity.last().copied().unwrap_or(0.0);
        self.popularity.push(total + weight);
        i
    }

    fn sample_product(&mut self) -> usize {
        let total = self.popularity.last().copied().unwrap_or(0.0);
        if total <= 0.0 {
            return 0;
        }
        let x = self.rng.random_range(0.0..total);
        self.popularity
            .partition_point(|&c| c <= x)
            .min(self.products.len() - 1)
    }

    fn write_customer(&mut self, i: usize, last_login: i64) {
        let c = &self.customers[i];
        let l = &mut self.line;
        l.begin();
        l.str("customer_id", &c.id);
        l.str("name", &c.name);
        l.str("email", &c.email);
        l.str("gender", c.gender);
        l.int("age", c.age as i64);
        l.str("location", &c.location);
        l.ts("signup_date", c.signup_ms);
        l.ts("last_login", last_login);
    }

    fn write_product(&mut self, i: usize) {
        let p = &self.products[i];
        let l = &mut self.line;
        l.begin();
        l.str("product_id", &p.id);
        l.str("name", &p.name);
        l.str("category", p.category);
        l.float("price", p.price);
        l.int("stock_quantity", p.stock);
        l.str("supplier", &p.supplier);
        l.float("rating", p.rating);
        l.ts("updated_at", self.now_ms);
    }

    fn write_transaction(&mut self) {
        let p = self.sample_product();
        let c = self.rng.random_range(0..self.customers.len());
        let quantity: i64 = match self.rng.random_range(0..10) {
            0..6 => 1,
            6..8 => 2,
            8 => 3,
            _ => self.rng.random_range(4..=6),
        };
        let status = match self.rng.random_range(0..100) {
            0..85 => "completed",
            85..92 => "pending",
            92..97 => "failed",
            _ => "refunded",
        };
        let pay = PAYMENT[self.rng.random_range(0..PAYMENT.len())];
        let t = self.event_time();
        if status == "completed" {
            // Sales draw the stock down; the next product update reports it.
            let s = &mut self.products[p].stock;
            *s = (*s - quantity).max(0);
        }
        let price = self.products[p].price;
        let total = (price * quantity as f64 * 100.0).round() / 100.0;
        let l = &mut self.line;
        l.begin();
        l.id("transaction_id", "TX-", self.seq);
        l.str("customer_id", &self.customers[c].id);
        l.str("product_id", &self.products[p].id);
        l.int("quantity", quantity);
        l.float("price", price);
        l.float("total_amount", total);
        l.str("payment_method", pay);
        l.str("status", status);
        l.ts("transaction_time", t);
    }

    fn write_view(&mut self) {
        let p = self.sample_product();
        let c = self.rng.random_range(0..self.customers.len());
        let d: i64 = if self.rng.random_ratio(1, 5) {
            self.rng.random_range(60..600)
        } else {
            self.rng.random_range(1..60)
        };
        let t = self.event_time();
        let l = &mut self.line;
        l.begin();
        l.id("view_id", "VIEW-", self.seq);
        l.str("customer_id", &self.customers[c].id);
        l.str("product_id", &self.products[p].id);
        l.int("view_duration", d);
        l.ts("view_time", t);
    }

    fn write_interaction(&mut self) {
        let p = self.sample_product();
        let c = self.rng.random_range(0..self.customers.len());
        let t = self.event_time();
        // Well-rated products get kinder reviews: the sentiment view has something to find.
        let mood = self.products[p].rating / 5.0;
        let kind = self.rng.random_range(0..10);
        let positive = self.rng.random_bool(mood.clamp(0.05, 0.95));
        let review = if (4..7).contains(&kind) {
            Some(text::review(&mut self.rng, positive))
        } else {
            None
        };
        let l = &mut self.line;
        l.begin();
        l.id("interaction_id", "INT-", self.seq);
        l.str("customer_id", &self.customers[c].id);
        l.str("product_id", &self.products[p].id);
        match kind {
            0..4 => {
                l.str("interaction_type", "wishlist_addition");
                l.null("rating");
                l.null("review_text");
            }
            4..7 => {
                l.str("interaction_type", "review");
                l.null("rating");
                l.str("review_text", review.as_deref().unwrap_or(""));
            }
            _ => {
                let r = if positive {
                    self.rng.random_range(4..=5)
                } else {
                    self.rng.random_range(1..=3)
                };
                l.str("interaction_type", "rating");
                l.int("rating", r);
                l.null("review_text");
            }
        }
        l.ts("interaction_time", t);
    }

    fn write_log(&mut self) {
        let level = match self.rng.random_range(0..100) {
            0..30 => "DEBUG",
            30..80 => "INFO",
            80..95 => "WARNING",
            _ => "ERROR",
        };
        let service = SERVICES[self.rng.random_range(0..SERVICES.len())];
        let msg = text::log_message(&mut self.rng, level);
        let t = self.event_time();
        let l = &mut self.line;
        l.begin();
        l.id("log_id", "LOG-", self.seq);
        l.str("level", level);
        l.str("service", service);
        l.str("message", msg);
        l.ts("log_time", t);
    }

    /// Current generator time (ms since the epoch).
    pub fn now_ms(&self) -> i64 {
        self.now_ms
    }
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(seed: u64, n: usize) -> [Vec<u8>; 6] {
        let mut g = Generator::new(
            seed,
            Clock::Simulated {
                start_ms: DEFAULT_START_MS,
            },
        );
        let mut out: [Vec<u8>; 6] = Default::default();
        for _ in 0..n {
            g.next_into(&mut out);
        }
        out
    }

    #[test]
    fn deterministic_for_a_seed() {
        assert_eq!(run(7, 5000), run(7, 5000));
        assert_ne!(run(7, 5000), run(8, 5000));
    }

    #[test]
    fn every_line_is_json_and_ids_resolve() {
        let out = run(1, 20_000);
        let mut customers = std::collections::HashSet::new();
        let mut products = std::collections::HashSet::new();
        let mut counts = [0usize; 6];
        for (t, buf) in out.iter().enumerate() {
            for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let v: serde_json::Value = serde_json::from_slice(line).unwrap();
                counts[t] += 1;
                match t {
                    0 => {
                        customers.insert(v["customer_id"].as_str().unwrap().to_string());
                        assert!(
                            ["Male", "Female", "Other"].contains(&v["gender"].as_str().unwrap())
                        );
                    }
                    1 => {
                        products.insert(v["product_id"].as_str().unwrap().to_string());
                    }
                    _ => {}
                }
            }
        }
        assert!(counts.iter().all(|&c| c > 0), "{counts:?}");
        assert!(customers.len() >= 500 && products.len() >= 100);
        for line in out[2].split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let v: serde_json::Value = serde_json::from_slice(line).unwrap();
            assert!(customers.contains(v["customer_id"].as_str().unwrap()));
            assert!(products.contains(v["product_id"].as_str().unwrap()));
        }
    }
}
