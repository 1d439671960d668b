// esbuild gathers imported CSS into dist/app.css
declare module '*.css';
