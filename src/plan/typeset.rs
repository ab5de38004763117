//! A set of data source types as a bit mask: the planner keeps several per machine, and 100,000
//! machines must fit in well under 300 MB.

use crate::catalog::DataSourceType;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TypeSet(u32);

fn bit(t: DataSourceType) -> u32 {
    let idx = DataSourceType::ALL
        .iter()
        .position(|x| *x == t)
        .unwrap_or(0);
    1 << idx
}

impl TypeSet {
    pub const EMPTY: TypeSet = TypeSet(0);
    pub fn contains(self, t: DataSourceType) -> bool {
        self.0 & bit(t) != 0
    }
    pub fn insert(&mut self, t: DataSourceType) {
        self.0 |= bit(t);
    }
    pub fn remove(&mut self, t: DataSourceType) {
        self.0 &= !bit(t);
    }
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = DataSourceType> {
        DataSourceType::ALL
            .into_iter()
            .filter(move |t| self.contains(*t))
    }
}

impl FromIterator<DataSourceType> for TypeSet {
    fn from_iter<I: IntoIterator<Item = DataSourceType>>(iter: I) -> Self {
        let mut s = TypeSet::EMPTY;
        for t in iter {
            s.insert(t);
        }
        s
    }
}
