//! Words for product names, reviews and log messages.

use rand::Rng;

const ADJECTIVES: [&str; 16] = [
    "Classic",
    "Smart",
    "Ultra",
    "Eco",
    "Pro",
    "Compact",
    "Deluxe",
    "Essential",
    "Premium",
    "Vintage",
    "Wireless",
    "Organic",
    "Portable",
    "Modern",
    "Rugged",
    "Lite",
];

fn nouns(category: &str) -> &'static [&'static str] {
    match category {
        "Electronics" => &[
            "Headphones",
            "Speaker",
            "Monitor",
            "Keyboard",
            "Camera",
            "Tablet",
        ],
        "Clothing" => &["Jacket", "T-Shirt", "Sneakers", "Scarf", "Jeans", "Hoodie"],
        "Home & Kitchen" => &[
            "Blender",
            "Kettle",
            "Lamp",
            "Cookware Set",
            "Knife",
            "Pillow",
        ],
        "Books" => &[
            "Novel",
            "Cookbook",
            "Atlas",
            "Biography",
            "Guide",
            "Anthology",
        ],
        "Sports" => &[
            "Yoga Mat",
            "Racket",
            "Football",
            "Dumbbell",
            "Bike Helmet",
            "Tent",
        ],
        "Beauty" => &[
            "Serum",
            "Lipstick",
            "Shampoo",
            "Perfume",
            "Face Cream",
            "Brush Set",
        ],
        "Toys" => &[
            "Puzzle",
            "Robot",
            "Board Game",
            "Plush Bear",
            "Kite",
            "Train Set",
        ],
        _ => &[
            "Coffee",
            "Tea",
            "Granola",
            "Olive Oil",
            "Chocolate",
            "Pasta",
        ],
    }
}

pub(super) fn product_name(rng: &mut impl Rng, category: &str) -> String {
    let n = nouns(category);
    format!(
        "{} {}",
        ADJECTIVES[rng.random_range(0..ADJECTIVES.len())],
        n[rng.random_range(0..n.len())]
    )
}

const POSITIVE: [&str; 10] = [
    "Great product, works perfectly.",
    "Excellent quality and fast delivery.",
    "I love it, very good value.",
    "Amazing! Exactly as described.",
    "Really happy with this purchase.",
    "Good quality, would recommend.",
    "Fantastic, better than expected.",
    "Very good, my family loves it.",
    "Not bad at all, quite nice actually.",
    "Perfect gift, beautiful design.",
];
const NEGATIVE: [&str; 10] = [
    "Terrible quality, broke after a day.",
    "Very bad, not worth the money.",
    "Disappointed, it is not good.",
    "Awful experience, arrived damaged.",
    "Poor design and cheap materials.",
    "Would not recommend, really bad.",
    "Horrible, stopped working quickly.",
    "Waste of money, very poor.",
    "Not happy with it, quite disappointing.",
    "The worst purchase I have made.",
];
const NEUTRAL: [&str; 4] = [
    "It arrived on Tuesday.",
    "Average product, does the job.",
    "The box contains one unit.",
    "Okay for the price.",
];

pub(super) fn review(rng: &mut impl Rng, positive: bool) -> String {
    if rng.random_ratio(1, 10) {
        return NEUTRAL[rng.random_range(0..NEUTRAL.len())].to_string();
    }
    let pool = if positive { &POSITIVE } else { &NEGATIVE };
    pool[rng.random_range(0..pool.len())].to_string()
}

pub(super) fn log_message(rng: &mut impl Rng, level: &str) -> &'static str {
    let pool: &[&str] = match level {
        "ERROR" => &[
            "payment gateway timeout",
            "database connection refused",
            "unhandled exception in request handler",
        ],
        "WARNING" => &[
            "slow query over 500 ms",
            "retrying upstream call",
            "cache miss rate above threshold",
        ],
        "DEBUG" => &["cache hit", "request parsed", "feature flag evaluated"],
        _ => &[
            "request served",
            "user logged in",
            "order placed",
            "inventory synced",
        ],
    };
    pool[rng.random_range(0..pool.len())]
}
